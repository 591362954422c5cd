-- wrk script: every request carries the next token of a pool of distinct
-- ones (TOKENS names the file, one per line), so no verifier can answer from
-- a cache. Requests are formatted once per thread, up front, so the load
-- generator costs the same per request as with one fixed header.
local requests = {}
local next_request = 0

function init(args)
  for token in io.lines(os.getenv("TOKENS")) do
    requests[#requests + 1] = wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. token })
  end
  -- Threads start at different points of the pool.
  next_request = math.random(#requests) - 1
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end
