#!/usr/bin/env bash
# Side-by-side benchmark of sigil-sidecar against HAProxy 2.6 (jwt_verify and
# plain proxy) and the seed design's Node verifier, all forwarding to the same
# fast upstream (HAProxy answering 200 "ok" itself on 2 threads), measured with
# wrk at 64 connections in one run. Rows that verify a signature on every
# request (HAProxy jwt_verify, the sidecar with its cache off, the Node seed)
# send a pool of distinct tokens (tokens.lua); the cache-on row and the plain
# proxy send one token repeated.
#
# Needs: haproxy, wrk, openssl, node/npm (apt-get install -y haproxy wrk nodejs npm).
# The machine may be shared, so targets run round-robin for ROUNDS rounds (each
# round starts at a different target), ratios are taken within a round, and
# each figure is the median (and range) of its rounds.
#
# Usage: bench/sidecar/run.sh [seconds-per-run] [rounds]   (writes bench/sidecar/results.md)
#        BASELINE=<git revision> bench/sidecar/run.sh ...      (also runs that revision's sidecar,
#                                                               interleaved, and reports new/baseline)
#        BASELINE=<label> BASELINE_BIN=<binary> bench/sidecar/run.sh ...  (the same with a sidecar built earlier)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DURATION="${1:-10}"
ROUNDS="${2:-3}"
CONNECTIONS=64
BASELINE="${BASELINE:-}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$BASELINE" ] && [ -z "${BASELINE_BIN:-}" ]; then git -C "$ROOT" worktree remove --force "$WORK/baseline" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
if [ -n "${BASELINE_BIN:-}" ]; then
  # A sidecar binary built earlier (e.g. from main before a change), labelled $BASELINE.
  BASELINE="${BASELINE:-prebuilt}"
  cp "$BASELINE_BIN" "$WORK/baseline-sidecar"
elif [ -n "$BASELINE" ]; then
  # A target directory of its own: cargo names a workspace crate's
  # artifacts by its path inside the workspace, so a second checkout
  # building into target/ would overwrite this one's, and the newer
  # timestamps would make cargo take them for up to date.
  git worktree add -q --detach "$WORK/baseline" "$BASELINE"
  (cd "$WORK/baseline" && CARGO_TARGET_DIR="$ROOT/target/bench-baseline" cargo build --release -q -p sigil-sidecar --bin sigil-sidecar)
  cp "$ROOT/target/bench-baseline/release/sigil-sidecar" "$WORK/baseline-sidecar"
fi
cargo build --release -q -p sigil-sidecar --bin sigil-sidecar --example bench_keys
mkdir "$WORK/keys" # its own directory: the sidecar watches it
"$ROOT/target/release/examples/bench_keys" "$WORK/keys"
openssl pkey -in "$WORK/keys/private.pem" -pubout -out "$WORK/keys/public.pem" 2>/dev/null
TOKEN="$(cat "$WORK/keys/token")"
export TOKENS="$WORK/keys/tokens"
(cd "$HERE/node" && npm ci --silent --no-audit --no-fund >/dev/null)

haproxy -db -f "$HERE/backend.cfg" >"$WORK/backend.log" 2>&1 & PIDS+=($!)
BENCH_DIR="$WORK/keys" haproxy -db -f "$HERE/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 & HAPROXY_PID=$!; PIDS+=("$HAPROXY_PID")

sidecar() { # port admin-port cache-size [binary]
  SIGIL_LOG_FORMAT=text RUST_LOG=warn "${4:-$ROOT/target/release/sigil-sidecar}" \
    --listen "127.0.0.1:$1" --admin-listen "127.0.0.1:$2" --upstream http://127.0.0.1:9000 \
    --jwks-file "$WORK/keys/jwks.json" --issuer https://issuer.bench --audience orders \
    --token-cache-size "$3" >"$WORK/sidecar-$1.log" 2>&1 &
}
sidecar 9003 9103 0; NOCACHE_PID=$!; PIDS+=("$NOCACHE_PID")
sidecar 9004 9104 10000; CACHE_PID=$!; PIDS+=("$CACHE_PID")
node "$HERE/node/server.mjs" "$WORK/keys/jwks.json" 9005 9000 >"$WORK/node.log" 2>&1 & NODE_PID=$!; PIDS+=("$NODE_PID")
PORTS=(9001 9002 9003 9004 9005)
if [ -n "$BASELINE" ]; then
  sidecar 9006 9106 0 "$WORK/baseline-sidecar"; BASE_NOCACHE_PID=$!; PIDS+=("$BASE_NOCACHE_PID")
  sidecar 9007 9107 10000 "$WORK/baseline-sidecar"; BASE_CACHE_PID=$!; PIDS+=("$BASE_CACHE_PID")
  PORTS+=(9006 9007)
fi

# Every target must accept the token and refuse a request without one.
for port in "${PORTS[@]}"; do
  for _ in $(seq 50); do curl -fso /dev/null "http://127.0.0.1:$port/" -H "Authorization: Bearer $TOKEN" && break; sleep 0.1; done
  code="$(curl -so /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" -H "Authorization: Bearer $TOKEN")"
  [ "$code" = 200 ] || { echo "port $port: expected 200 with a token, got $code" >&2; exit 1; }
  if [ "$port" != 9002 ]; then
    code="$(curl -so /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")"
    [ "$code" = 401 ] || { echo "port $port: expected 401 without a token, got $code" >&2; exit 1; }
  fi
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

declare -A RPS P99 RSS
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ms() { awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.2f", v }'; }
run() { # name port pid pool|one
  local script=()
  if [ "$4" = pool ]; then script=(-s "$HERE/tokens.lua"); fi
  wrk -t2 -c"$CONNECTIONS" -d2s "${script[@]}" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$2/" >/dev/null # warm-up
  local out; out="$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${script[@]}" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$2/")"
  echo "$out" >>"$WORK/wrk-$1.txt"
  if echo "$out" | grep -q "Non-2xx"; then echo "$1: non-2xx responses under load" >&2; echo "$out" >&2; exit 1; fi
  local rps p50 p99; rps="$(echo "$out" | awk '/Requests\/sec/ { printf "%.0f", $2 }')"
  p50="$(echo "$out" | awk '$1 == "50%" { print $2 }' | ms)"; p99="$(echo "$out" | awk '$1 == "99%" { print $2 }' | ms)"
  RPS[$1]="${RPS[$1]:-} $rps"; P99[$1]="${P99[$1]:-} $p99"; RSS[$1]="$(rss_mib "$3")"; ROUND_RPS[$1]=$rps; ROUND_P99[$1]=$p99
  printf '  %-18s %8s req/s  p50 %6s ms  p99 %6s ms  RSS %s MiB\n' "$1" "$rps" "$p50" "$p99" "${RSS[$1]}" | tee -a "$WORK/rounds.txt"
}
TARGETS=("haproxy-jwt 9001 $HAPROXY_PID pool" "haproxy-plain 9002 $HAPROXY_PID one" "sidecar-nocache 9003 $NOCACHE_PID pool"
  "sidecar-cache 9004 $CACHE_PID one" "node-seed 9005 $NODE_PID pool")
if [ -n "$BASELINE" ]; then
  TARGETS+=("baseline-nocache 9006 $BASE_NOCACHE_PID pool" "baseline-cache 9007 $BASE_CACHE_PID one")
fi
declare -A ROUND_RPS ROUND_P99 Q
qpush() { Q[$1]="${Q[$1]:-} $(ratio "$2" "$3")"; } # ratio name, a, b
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" | tee -a "$WORK/rounds.txt"
  # Rotate the starting target, so no target always runs first (or last).
  n=${#TARGETS[@]}
  for i in $(seq 0 $((n - 1))); do
    # shellcheck disable=SC2086
    run ${TARGETS[$(((i + round - 1) % n))]}
  done
  qpush nocache-jwt "${ROUND_RPS[sidecar-nocache]}" "${ROUND_RPS[haproxy-jwt]}"
  qpush cache-plain "${ROUND_RPS[sidecar-cache]}" "${ROUND_RPS[haproxy-plain]}"
  qpush nocache-p99 "${ROUND_P99[sidecar-nocache]}" "${ROUND_P99[haproxy-jwt]}"
  qpush cache-p99 "${ROUND_P99[sidecar-cache]}" "${ROUND_P99[haproxy-plain]}"
  qpush nocache-node "${ROUND_RPS[sidecar-nocache]}" "${ROUND_RPS[node-seed]}"
  qpush cache-node "${ROUND_RPS[sidecar-cache]}" "${ROUND_RPS[node-seed]}"
  if [ -n "$BASELINE" ]; then
    qpush base-nocache "${ROUND_RPS[sidecar-nocache]}" "${ROUND_RPS[baseline-nocache]}"
    qpush base-cache "${ROUND_RPS[sidecar-cache]}" "${ROUND_RPS[baseline-cache]}"
  fi
done
declare -A RANGE P99RANGE
for name in "${!RPS[@]}"; do
  RANGE[$name]="$(echo "${RPS[$name]}" | range)"; P99RANGE[$name]="$(echo "${P99[$name]}" | range)"
  RPS[$name]="$(echo "${RPS[$name]}" | median)"; P99[$name]="$(echo "${P99[$name]}" | median)"
done
q() { echo "$(echo "${Q[$1]}" | median) ($(echo "${Q[$1]}" | range))"; }
{
  echo "# sigil-sidecar benchmark"
  echo
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average before $LOAD_BEFORE,"
  echo "wrk -t2 -c$CONNECTIONS -d${DURATION}s, $ROUNDS interleaved rounds (each starting at a different target), RS256 tokens ($(printf %s "$TOKEN" | wc -c) bytes)."
  echo "Every proxy forwards to the same upstream: HAProxy (nbthread 2) answering 200 \"ok\" itself. wrk, proxies and upstream share the machine."
  echo "Rows marked pool send $(wc -l <"$TOKENS") distinct tokens in turn; the others one token repeated."
  echo "HAProxy runs jwt_verify and plain proxy in one process (nbthread 2), so its RSS covers both."
  echo
  echo "| target | tokens | req/s, median (range) | p99 ms, median (range) | RSS after load |"
  echo "| --- | --- | ---: | ---: | ---: |"
  for t in "${TARGETS[@]}"; do
    read -r name _ _ kind <<<"$t"
    echo "| $name | $kind | ${RPS[$name]} (${RANGE[$name]}) | ${P99[$name]} (${P99RANGE[$name]}) | ${RSS[$name]} MiB |"
  done
  if [ -n "$BASELINE" ]; then
    echo
    if [ -n "${BASELINE_BIN:-}" ]; then where="the prebuilt $BASELINE_BIN"; else where="$(git rev-parse --short "$BASELINE")"; fi
    echo "baseline: the sidecar of $BASELINE ($where); sidecar: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sidecar core || echo ' with uncommitted changes')."
  fi
  echo
  echo "Ratios taken within each round; median (range) over the rounds:"
  echo
  echo "| ratio | target | measured |"
  echo "| --- | ---: | ---: |"
  echo "| sidecar (cache off) / HAProxy jwt_verify, req/s | >= 1.1 | $(q nocache-jwt) |"
  echo "| sidecar (cache off) / HAProxy jwt_verify, p99 | <= 1.0 | $(q nocache-p99) |"
  echo "| sidecar (cache on) / HAProxy plain proxy, req/s | >= 0.8 (aim 1.0) | $(q cache-plain) |"
  echo "| sidecar (cache on) / HAProxy plain proxy, p99 | - | $(q cache-p99) |"
  echo "| sidecar (cache off) / Node seed | >= 5 | $(q nocache-node) |"
  echo "| sidecar (cache on) / Node seed | >= 5 | $(q cache-node) |"
  echo "| sidecar RSS after load (cache off / on) | < 20 MiB | ${RSS[sidecar-nocache]} / ${RSS[sidecar-cache]} MiB |"
  if [ -n "$BASELINE" ]; then
    echo "| sidecar / baseline, cache off | no worse (~1.0) | $(q base-nocache) |"
    echo "| sidecar / baseline, cache on | no worse (~1.0) | $(q base-cache) |"
  fi
  echo
  echo "Every round (the medians above come from these):"
  echo
  echo '```'
  cat "$WORK/rounds.txt"
  echo '```'
} >"$HERE/results.md"
cat "$HERE/results.md"
