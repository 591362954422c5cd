#!/usr/bin/env bash
# Operator speed against a real API server (hack/control-plane on loopback):
#   * create -> Ready latency, one SigningKey at a time, ES256 and RSA-2048,
#     beside a baseline of the bare API round trip (create a ConfigMap and see
#     it in a watch), reported as a ratio;
#   * 500 SigningKeys created at once -> time until all are Ready, and the
#     operator's peak RSS;
#   * one SigningKey distributing its JWKS to 500 namespaces (operator in
#     cluster scope) -> time until every copy exists, and from a manual
#     rotation until its next key is in every copy.
# Usage: bench/operator/run.sh [RESULTS_FILE]   (default bench/operator/results.json)
# Targets from issue 3: ES256 median < 1 s, RSA-2048 median < 2 s, 500 in < 60 s, RSS < 64 MiB.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$repo/bench/operator/results.json}
dir=$repo/target/bench-operator-$$
cd "$repo"

cargo build --release -q -p sigil-operator --bin sigil-operator --example bench
bin=$repo/target/release
eval "$(hack/control-plane up "$dir" --watch-pid $$)"
cleanup() {
	[[ -n ${op_pid:-} ]] && kill "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null
	hack/control-plane down "$dir" --clean >/dev/null 2>&1 || true
}
trap cleanup EXIT

kubectl() { "$SIGIL_KUBECTL" "$@"; }
"$bin/sigil-operator" crd | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Established crd/signingkeys.sigil.dev --timeout=30s >/dev/null
kubectl create namespace bench >/dev/null

RUST_LOG=warn "$bin/sigil-operator" --namespace bench --leader-election=false \
	--admin-listen 127.0.0.1:0 2>"$dir/logs/operator.log" &
op_pid=$!
sleep 1

# A group, not a pipeline: the operator restarted inside must be the one the
# EXIT trap stops (a pipeline would run this in a subshell).
{
	echo "{\"date\": \"$(date -u +%FT%TZ)\", \"cpus\": $(nproc), \"runs\": ["
	"$bin/examples/bench" latency bench ES256 50
	echo ","
	"$bin/examples/bench" latency bench RS256 20
	echo ","
	"$bin/examples/bench" converge bench ES256 500
	echo ","
	peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$op_pid/status")
	echo "{\"run\": \"operator_memory\", \"peak_rss_mib\": $((peak_kib / 1024)), \"signing_keys\": 570}"
	echo ","
	# Distribution needs cluster scope: the same binary without --namespace
	# (it also takes on the 570 SigningKeys above, all up to date).
	kill "$op_pid"
	wait "$op_pid" 2>/dev/null || true
	RUST_LOG=warn "$bin/sigil-operator" --leader-election=false \
		--admin-listen 127.0.0.1:0 >/dev/null 2>"$dir/logs/operator-cluster.log" &
	op_pid=$!
	sleep 1
	"$bin/examples/bench" distribute bench ES256 500
	echo ","
	peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$op_pid/status")
	echo "{\"run\": \"operator_memory_distributing\", \"peak_rss_mib\": $((peak_kib / 1024)), \"namespaces\": 500}"
	echo "]}"
} >"$out"
cat "$out"
