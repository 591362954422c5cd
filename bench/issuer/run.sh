#!/usr/bin/env bash
# Benchmarks sigil-issuer's POST /token, side by side in one run with its
# baselines on the same machine:
#   * `openssl speed -multi <cores> rsa2048` (the RS256 ceiling: RSA signatures/s),
#   * the Node seed design's auth server (Express + jose, RS256; node-seed/).
# Measured: client_credentials with a warm client-authentication cache for
# RS256, ES256 and EdDSA, and the cold path (every request runs Argon2id).
#
# Needs: wrk, openssl, node + npm (for the seed; skipped when missing).
# Usage: bench/issuer/run.sh            (DURATION=10s CONNS=64 THREADS=2 to change)
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
CORES=$(nproc)
PORT=18480
ADMIN=18490
SEED_PORT=18470

cargo build --release -q -p sigil-issuer --bin sigil-issuer --example dev-keys
BIN=$PWD/target/release/sigil-issuer
DEVKEYS=$PWD/target/release/examples/dev-keys

work=$(mktemp -d)
pid=""
cleanup() {
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

secret=$(openssl rand -hex 24)
hash=$(printf %s "$secret" | "$BIN" hash-secret)
export BASIC
BASIC=$(printf %s "bench:$secret" | base64 -w0)
printf 'clients:\n  - id: bench\n    secretHash: "%s"\n    scopes: [read, write]\n' "$hash" >"$work/clients.yaml"

start_issuer() { # alg, extra flags...
    local alg=$1
    shift
    rm -rf "$work/$alg"
    "$DEVKEYS" "$alg" "$work/$alg" >/dev/null
    RUST_LOG=warn "$BIN" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" \
        --key-dir "$work/$alg/keys" --jwks-file "$work/$alg/jwks/jwks.json" \
        --issuer-url https://issuer.bench --audience bench-api --clients-file "$work/clients.yaml" \
        --auth-failure-limit 1000000 "$@" >"$work/issuer.log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null; do sleep 0.05; done
    # One request to fill the authentication cache (and check it works).
    curl -sf -u "bench:$secret" -d grant_type=client_credentials "http://127.0.0.1:$PORT/token" >/dev/null
}

stop_issuer() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# Prints "<requests/s> <p50> <p99> <non-2xx>" for a wrk run.
measure() { # url, extra wrk args...
    local url=$1
    shift
    local out
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "$url")
    echo "$out" >>"$work/wrk.log"
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
    echo "$rps $p50 $p99 ${errors:-0}"
}

row() { printf '| %-44s | %12s | %8s | %8s | %7s |\n' "$@"; }

echo "# sigil-issuer benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $CORES cores, wrk -t$THREADS -c$CONNS -d$DURATION"
echo
echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
openssl_sign=$(openssl speed -multi "$CORES" -seconds 10 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $6}')
echo "openssl speed -multi $CORES rsa2048: $openssl_sign sign/s"
echo

row "run" "requests/s" "p50" "p99" "non-2xx"
row "---" "---" "---" "---" "---"
declare -A rate
for alg in RS256 ES256 EdDSA; do
    start_issuer "$alg"
    read -r rps p50 p99 errors < <(measure "http://127.0.0.1:$PORT/token" -s bench/issuer/post.lua)
    rate[$alg]=$rps
    row "sigil-issuer $alg, warm auth cache" "$rps" "$p50" "$p99" "$errors"
    stop_issuer
done

# Cold: a 1ns cache TTL means every request runs Argon2id (m=19456, t=2, p=1).
start_issuer ES256 --auth-cache-ttl 1ns
read -r rps p50 p99 errors < <(measure "http://127.0.0.1:$PORT/token" -s bench/issuer/post.lua)
rate[cold]=$rps
row "sigil-issuer ES256, cold (Argon2id per request)" "$rps" "$p50" "$p99" "$errors"
stop_issuer

if command -v node >/dev/null && command -v npm >/dev/null; then
    (cd bench/issuer/node-seed && npm install --silent --no-audit --no-fund >/dev/null)
    "$DEVKEYS" RS256 "$work/seed" >/dev/null
    PORT=$SEED_PORT KEY_FILE="$work/seed/keys/private.pem" node bench/issuer/node-seed/index.js >"$work/seed.log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$SEED_PORT/token" >/dev/null; do sleep 0.1; done
    read -r rps p50 p99 errors < <(measure "http://127.0.0.1:$SEED_PORT/token")
    rate[node]=$rps
    row "Node seed (Express + jose) RS256" "$rps" "$p50" "$p99" "$errors"
    stop_issuer
fi

openssl_sign_after=$(openssl speed -multi "$CORES" -seconds 10 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $6}')
echo
echo "openssl speed -multi $CORES rsa2048 after the runs: $openssl_sign_after sign/s"
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
openssl_mean=$(awk -v a="$openssl_sign" -v b="$openssl_sign_after" 'BEGIN { printf "%.1f", (a + b) / 2 }')
echo "Ratios:"
echo "- RS256 /token vs openssl rsa2048 sign/s (mean of before/after): $(ratio "${rate[RS256]}" "$openssl_mean") (target >= 0.85)"
if [[ -n "${rate[node]:-}" ]]; then
    echo "- ES256 vs Node seed: $(ratio "${rate[ES256]}" "${rate[node]}") (target >= 5)"
    echo "- EdDSA vs Node seed: $(ratio "${rate[EdDSA]}" "${rate[node]}") (target >= 5)"
    echo "- RS256 vs Node seed: $(ratio "${rate[RS256]}" "${rate[node]}")"
fi
echo "- warm vs cold ES256: $(ratio "${rate[ES256]}" "${rate[cold]}")"
echo
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
