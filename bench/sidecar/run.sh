#!/usr/bin/env bash
# Side-by-side benchmark of sigil-sidecar against HAProxy 2.6 (jwt_verify and
# plain proxy) and the seed design's Node verifier, all forwarding to the same
# trivial backend, measured with wrk at 64 connections in one run.
#
# Needs: haproxy, wrk, openssl, node/npm (apt-get install -y haproxy wrk nodejs npm).
# The machine may be shared, so targets run round-robin for ROUNDS rounds and
# each figure is the median of its rounds.
#
# Usage: bench/sidecar/run.sh [seconds-per-run] [rounds]   (writes bench/sidecar/results.md)
#        BASELINE=<git revision> bench/sidecar/run.sh ...      (also runs that revision's sidecar,
#                                                               interleaved, and reports new/baseline)
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
  if [ -n "$BASELINE" ]; then git -C "$ROOT" worktree remove --force "$WORK/baseline" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
if [ -n "$BASELINE" ]; then
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

rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

declare -A RPS P99 RSS
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ms() { awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.2f", v }'; }
run() { # name port pid
  wrk -t2 -c"$CONNECTIONS" -d2s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$2/" >/dev/null # warm-up
  local out; out="$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$2/")"
  echo "$out" >>"$WORK/wrk-$1.txt"
  if echo "$out" | grep -q "Non-2xx"; then echo "$1: non-2xx responses under load" >&2; echo "$out" >&2; exit 1; fi
  local rps p99; rps="$(echo "$out" | awk '/Requests\/sec/ { printf "%.0f", $2 }')"; p99="$(echo "$out" | awk '$1 == "99%" { print $2 }' | ms)"
  RPS[$1]="${RPS[$1]:-} $rps"; P99[$1]="${P99[$1]:-} $p99"; RSS[$1]="$(rss_mib "$3")"
  printf '  %-18s %8s req/s  p99 %8s ms  RSS %s MiB\n' "$1" "$rps" "$p99" "${RSS[$1]}" | tee -a "$WORK/rounds.txt"
}
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" | tee -a "$WORK/rounds.txt"
  run haproxy-jwt 9001 "$HAPROXY_PID"
  run haproxy-plain 9002 "$HAPROXY_PID"
  run sidecar-nocache 9003 "$NOCACHE_PID"
  run sidecar-cache 9004 "$CACHE_PID"
  run node-seed 9005 "$NODE_PID"
  if [ -n "$BASELINE" ]; then
    run baseline-nocache 9006 "$BASE_NOCACHE_PID"
    run baseline-cache 9007 "$BASE_CACHE_PID"
  fi
done
for name in "${!RPS[@]}"; do
  RPS[$name]="$(echo "${RPS[$name]}" | median)"; P99[$name]="$(echo "${P99[$name]}" | median)"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
{
  echo "# sigil-sidecar benchmark"
  echo
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
  echo "wrk -t2 -c$CONNECTIONS -d${DURATION}s, median of $ROUNDS interleaved rounds, RS256 token ($(printf %s "$TOKEN" | wc -c) bytes), every proxy forwarding to the"
  echo "same single-threaded HAProxy backend answering 200 \"ok\". wrk, proxy and backend share the machine."
  echo "HAProxy runs jwt_verify and plain proxy in one process (nbthread 2), so its RSS covers both."
  echo
  echo "| target | req/s | p99 (ms) | RSS after load |"
  echo "| --- | ---: | ---: | ---: |"
  for name in haproxy-jwt haproxy-plain sidecar-nocache sidecar-cache node-seed ${BASELINE:+baseline-nocache baseline-cache}; do
    echo "| $name | ${RPS[$name]} | ${P99[$name]} | ${RSS[$name]} MiB |"
  done
  if [ -n "$BASELINE" ]; then
    echo
    echo "baseline: the sidecar of $BASELINE ($(git rev-parse --short "$BASELINE")); sidecar: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sidecar core || echo ' with uncommitted changes')."
  fi
  echo
  echo "| ratio | target | measured |"
  echo "| --- | ---: | ---: |"
  echo "| sidecar (cache off) / HAProxy jwt_verify | >= 1.0 | $(ratio "${RPS[sidecar-nocache]}" "${RPS[haproxy-jwt]}") |"
  echo "| sidecar (cache on) / HAProxy plain proxy | >= 0.8 | $(ratio "${RPS[sidecar-cache]}" "${RPS[haproxy-plain]}") |"
  echo "| sidecar (cache off) / Node seed | >= 5 | $(ratio "${RPS[sidecar-nocache]}" "${RPS[node-seed]}") |"
  echo "| sidecar (cache on) / Node seed | >= 5 | $(ratio "${RPS[sidecar-cache]}" "${RPS[node-seed]}") |"
  echo "| sidecar p99 (cache off) vs HAProxy jwt_verify p99 | no worse | ${P99[sidecar-nocache]} ms vs ${P99[haproxy-jwt]} ms |"
  echo "| sidecar RSS after load | < 20 MiB | ${RSS[sidecar-nocache]} / ${RSS[sidecar-cache]} MiB |"
  if [ -n "$BASELINE" ]; then
    echo "| sidecar / baseline, cache off | no worse (~1.0) | $(ratio "${RPS[sidecar-nocache]}" "${RPS[baseline-nocache]}") (p99 ${P99[sidecar-nocache]} vs ${P99[baseline-nocache]} ms) |"
    echo "| sidecar / baseline, cache on | no worse (~1.0) | $(ratio "${RPS[sidecar-cache]}" "${RPS[baseline-cache]}") (p99 ${P99[sidecar-cache]} vs ${P99[baseline-cache]} ms) |"
  fi
  echo
  echo "Every round (the medians above come from these):"
  echo
  echo '```'
  cat "$WORK/rounds.txt"
  echo '```'
} >"$HERE/results.md"
cat "$HERE/results.md"
