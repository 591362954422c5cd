#!/usr/bin/env bash
# Benchmarks sigil-issuer's POST /token side by side, in one run on the same
# machine, with its baselines:
#   * `openssl speed -multi <cores> rsa2048`: the RS256 ceiling (RSA-2048 signatures/s),
#   * the Node seed design's auth server (Express + jose, RS256; node-seed/).
# Measured: client_credentials with a warm client-authentication cache for
# RS256, ES256 and EdDSA, and the cold path (every request runs Argon2id).
#
# The machine may be shared, so every series is measured in ROUNDS interleaved
# rounds, ratios are taken within a round (openssl just before and after the
# RS256 run), and the median round is reported, with p99/p50 for the tail.
#
# Pinning: with 4 or more CPUs wrk runs on the last quarter of them and the
# server on the rest. With fewer, pinning wrk apart would halve the server's
# CPUs, so the throughput rows share all CPUs, and one extra ES256 row per
# round runs the server alone on CPU 0 and wrk alone on CPU 1: a tail that
# no wrk thread competes for.
#
# Needs: wrk, openssl, curl; node + npm for the seed (skipped when missing).
# Usage: bench/issuer/run.sh   (ROUNDS=3 DURATION=8s CONNS=64 THREADS=2)
#        BASELINE=<git revision> bench/issuer/run.sh   (also runs that
#        revision's issuer on the same keys, interleaved, and reports
#        new/baseline per algorithm and for the cold path)
#        BASELINE=<label> BASELINE_BIN=<binary> bench/issuer/run.sh   (the same
#        with an issuer built earlier)
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
CORES=$(nproc)
PORT=18480
ADMIN=18490
SEED_PORT=18470

BASELINE=${BASELINE:-}
work=$(mktemp -d)
pid=""
cleanup() {
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
    if [[ -n "$BASELINE" && -z "${BASELINE_BIN:-}" ]]; then git worktree remove --force "$work/baseline" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -n "${BASELINE_BIN:-}" ]]; then
    # An issuer binary built earlier (e.g. from main before a change), labelled $BASELINE.
    BASELINE=${BASELINE:-prebuilt}
    cp "$BASELINE_BIN" "$work/baseline-issuer"
elif [[ -n "$BASELINE" ]]; then
    # A target directory of its own: cargo names a workspace crate's
    # artifacts by its path inside the workspace, so a second checkout
    # building into target/ would overwrite this one's, and the newer
    # timestamps would make cargo take them for up to date.
    git worktree add -q --detach "$work/baseline" "$BASELINE"
    root=$PWD
    (cd "$work/baseline" && CARGO_TARGET_DIR="$root/target/bench-baseline" cargo build --release -q -p sigil-issuer --bin sigil-issuer)
    cp target/bench-baseline/release/sigil-issuer "$work/baseline-issuer"
fi
cargo build --release -q -p sigil-issuer --bin sigil-issuer --example dev-keys
BIN=$PWD/target/release/sigil-issuer
DEVKEYS=$PWD/target/release/examples/dev-keys

secret=$(openssl rand -hex 24)
hash=$(printf %s "$secret" | "$BIN" hash-secret)
export BASIC
BASIC=$(printf %s "bench:$secret" | base64 -w0)
printf 'clients:\n  - id: bench\n    secretHash: "%s"\n    scopes: [read, write]\n' "$hash" >"$work/clients.yaml"
for alg in RS256 ES256 EdDSA; do "$DEVKEYS" "$alg" "$work/$alg" >/dev/null; done

if ((CORES >= 4)); then
    LOADGEN_CPUS="$((CORES * 3 / 4))-$((CORES - 1))"
    SERVER_CPUS="0-$((CORES * 3 / 4 - 1))"
    PINNING="wrk pinned to CPUs $LOADGEN_CPUS, servers to $SERVER_CPUS"
else
    LOADGEN_CPUS="0-$((CORES - 1))"
    SERVER_CPUS="0-$((CORES - 1))"
    PINNING="not pinned ($CORES CPUs: pinning wrk apart would halve the server's); the 'pinned' row runs the server on CPU 0, wrk on CPU 1"
fi

start_issuer() { # alg, extra flags... ($ISSUER: the binary, default the new one; $CPUS: where it runs)
    local alg=$1
    shift
    RUST_LOG=warn taskset -c "${CPUS:-$SERVER_CPUS}" "${ISSUER:-$BIN}" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" \
        --key-dir "$work/$alg/keys" --jwks-file "$work/$alg/jwks/jwks.json" \
        --issuer-url https://issuer.bench --audience bench-api --clients-file "$work/clients.yaml" \
        --auth-failure-limit 1000000 "$@" >>"$work/issuer.log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null; do sleep 0.05; done
    # One request fills the authentication cache (and checks the setup works).
    curl -sf -u "bench:$secret" -d grant_type=client_credentials "http://127.0.0.1:$PORT/token" >/dev/null
}

stop() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

start_seed() {
    PORT=$SEED_PORT KEY_FILE="$work/RS256/keys/private.pem" node bench/issuer/node-seed/index.js >>"$work/seed.log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$SEED_PORT/token" >/dev/null; do sleep 0.1; done
}

# Prints "<requests/s> <p50> <p99> <non-2xx + socket errors>" for one wrk run.
measure() { # url, extra wrk args...
    local url=$1
    shift
    local out
    out=$(taskset -c "${WRK_CPUS:-$LOADGEN_CPUS}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "$url")
    echo "$out" >>"$work/wrk.log"
    awk '/^Requests\/sec:/ {rps = $2}
         $1 == "50%" {p50 = $2}
         $1 == "99%" {p99 = $2}
         /Non-2xx or 3xx responses:/ {bad += $5}
         /Socket errors:/ {bad += $4 + $6 + $8 + $10}
         END {printf "%s %s %s %d\n", rps, p50, p99, bad}' <<<"$out" | to_ms
}

# wrk prints 850.00us / 2.31ms / 1.02s: every latency in ms, two decimals.
to_ms() {
    awk '{ for (i = 2; i <= 3; i++) { v = $i; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } $i = sprintf("%.2f", v) } print }'
}
tail_ratio() { awk -v a="$2" -v b="$1" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; } # p50, p99

openssl_rate() {
    openssl speed -multi "$CORES" -seconds 5 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $6}'
}

median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() { printf '| %-5s | %-42s | %10s | %9s | %9s | %7s | %7s |\n' "$@"; }

have_node=false
if command -v node >/dev/null && command -v npm >/dev/null; then
    (cd bench/issuer/node-seed && npm install --silent --no-audit --no-fund >/dev/null) && have_node=true
fi

echo "# sigil-issuer benchmark"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds, $PINNING. Load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
row round run "requests/s" "p50 ms" "p99 ms" p99/p50 errors
row --- --- --- --- --- --- ---
declare -a t_es_p99 t_es_ratio t_pin_p99 t_pin_ratio
declare -a r_rs256 r_es256 r_eddsa r_node r_openssl q_openssl q_es_node q_ed_node q_rs_node
declare -A base
baseline_round() { # round: the baseline's three algorithms, into ${base[alg]}
    for alg in RS256 ES256 EdDSA; do
        ISSUER=$work/baseline-issuer start_issuer "$alg"
        read -r b p50 p99 bad < <(measure "http://127.0.0.1:$PORT/token" -s bench/issuer/post.lua)
        stop
        row "$1" "baseline ($BASELINE) $alg" "$b" "$p50" "$p99" "$(tail_ratio "$p50" "$p99")" "$bad"
        base[$alg]=$b
    done
}
for round in $(seq "$ROUNDS"); do
    if [[ -n "$BASELINE" ]] && ((round % 2 == 0)); then baseline_round "$round"; fi
    before=$(openssl_rate)
    start_issuer RS256
    read -r rs p50 p99 bad < <(measure "http://127.0.0.1:$PORT/token" -s bench/issuer/post.lua)
    stop
    after=$(openssl_rate)
    ossl=$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.1f", (a + b) / 2 }')
    row "$round" "openssl speed -multi $CORES rsa2048 sign/s" "$ossl" "" "" "" ""
    row "$round" "sigil-issuer RS256" "$rs" "$p50" "$p99" "$(tail_ratio "$p50" "$p99")" "$bad"

    start_issuer ES256
    read -r es p50 p99 bad < <(measure "http://127.0.0.1:$PORT/token" -s bench/issuer/post.lua)
    stop
    row "$round" "sigil-issuer ES256" "$es" "$p50" "$p99" "$(tail_ratio "$p50" "$p99")" "$bad"
    t_es_p99+=("$p99") t_es_ratio+=("$(tail_ratio "$p50" "$p99")")
    if ((CORES < 4)); then
        CPUS=0 start_issuer ES256
        read -r pin p50 p99 bad < <(WRK_CPUS=1 measure "http://127.0.0.1:$PORT/token" -s bench/issuer/post.lua)
        stop
        row "$round" "sigil-issuer ES256, pinned (server CPU 0, wrk 1)" "$pin" "$p50" "$p99" "$(tail_ratio "$p50" "$p99")" "$bad"
        t_pin_p99+=("$p99") t_pin_ratio+=("$(tail_ratio "$p50" "$p99")")
    fi

    start_issuer EdDSA
    read -r ed p50 p99 bad < <(measure "http://127.0.0.1:$PORT/token" -s bench/issuer/post.lua)
    stop
    row "$round" "sigil-issuer EdDSA" "$ed" "$p50" "$p99" "$(tail_ratio "$p50" "$p99")" "$bad"

    if [[ -n "$BASELINE" ]]; then
        # Every other round the baseline runs first, so a drift in the
        # machine's speed within a round does not favour either side.
        if ((round % 2 == 1)); then baseline_round "$round"; fi
        for alg in RS256 ES256 EdDSA; do
            case $alg in
                RS256) new=$rs ;;
                ES256) new=$es ;;
                *) new=$ed ;;
            esac
            printf '%s %s\n' "$alg" "$(ratio "$new" "${base[$alg]}")" >>"$work/baseline-ratios"
        done
    fi
    r_rs256+=("$rs") r_es256+=("$es") r_eddsa+=("$ed") r_openssl+=("$ossl")
    q_openssl+=("$(ratio "$rs" "$ossl")")
    if $have_node; then
        start_seed
        read -r node p50 p99 bad < <(measure "http://127.0.0.1:$SEED_PORT/token")
        stop
        row "$round" "Node seed (Express + jose) RS256, GET" "$node" "$p50" "$p99" "$(tail_ratio "$p50" "$p99")" "$bad"
        r_node+=("$node")
        q_es_node+=("$(ratio "$es" "$node")") q_ed_node+=("$(ratio "$ed" "$node")") q_rs_node+=("$(ratio "$rs" "$node")")
    fi
done

# Cold: a 1ns cache TTL makes every request run Argon2id (m=19456, t=2, p=1).
start_issuer ES256 --auth-cache-ttl 1ns
read -r cold p50 p99 bad < <(measure "http://127.0.0.1:$PORT/token" -s bench/issuer/post.lua)
stop
row "-" "sigil-issuer ES256, cold (Argon2id per request)" "$cold" "$p50" "$p99" "$(tail_ratio "$p50" "$p99")" "$bad"
if [[ -n "$BASELINE" ]]; then
    ISSUER=$work/baseline-issuer start_issuer ES256 --auth-cache-ttl 1ns
    read -r base_cold p50 p99 bad < <(measure "http://127.0.0.1:$PORT/token" -s bench/issuer/post.lua)
    stop
    row "-" "baseline ($BASELINE) ES256, cold" "$base_cold" "$p50" "$p99" "$(tail_ratio "$p50" "$p99")" "$bad"
fi

echo
echo "Medians over $ROUNDS rounds (ratios taken within each round):"
echo
echo "- openssl rsa2048 sign/s: $(printf '%s\n' "${r_openssl[@]}" | median); RS256 /token: $(printf '%s\n' "${r_rs256[@]}" | median);" \
    "ratio $(printf '%s\n' "${q_openssl[@]}" | median) (target >= 0.85)"
echo "- ES256 /token: $(printf '%s\n' "${r_es256[@]}" | median); EdDSA /token: $(printf '%s\n' "${r_eddsa[@]}" | median)"
echo "- ES256 p99 at $CONNS connections: $(printf '%s\n' "${t_es_p99[@]}" | median) ms (target < 10), p99/p50 $(printf '%s\n' "${t_es_ratio[@]}" | median) (target < 5)"
if ((${#t_pin_p99[@]} > 0)); then
    echo "- ES256 pinned apart (server CPU 0, wrk CPU 1): p99 $(printf '%s\n' "${t_pin_p99[@]}" | median) ms, p99/p50 $(printf '%s\n' "${t_pin_ratio[@]}" | median)"
fi
if $have_node; then
    echo "- Node seed: $(printf '%s\n' "${r_node[@]}" | median); ES256 / seed $(printf '%s\n' "${q_es_node[@]}" | median)," \
        "EdDSA / seed $(printf '%s\n' "${q_ed_node[@]}" | median) (target >= 5 each); RS256 / seed $(printf '%s\n' "${q_rs_node[@]}" | median)"
fi
echo "- cold path (Argon2id on every request): $cold requests/s, $(ratio "$(printf '%s\n' "${r_es256[@]}" | median)" "$cold")x slower than warm ES256"
if [[ -n "$BASELINE" ]]; then
    for alg in RS256 ES256 EdDSA; do
        ratios=$(awk -v a="$alg" '$1 == a {print $2}' "$work/baseline-ratios")
        echo "- new / baseline ($BASELINE) $alg: median $(median <<<"$ratios"), range $(sort -g <<<"$ratios" | head -1)-$(sort -g <<<"$ratios" | tail -1)"
    done
    echo "- new / baseline cold ES256: $(ratio "$cold" "$base_cold") (one run each)"
fi
echo
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)."
