#!/usr/bin/env bash
# The kubelet's real propagation delay and the rotation promise under load:
# runs the real-node rotation test (e2e/tests/pods.rs) ROUNDS times (default
# 1) and appends each run's report (target/e2e/reports/rotation-under-load.json)
# to bench/rotation/results.jsonl with the date. Needs root (the node).
#
#   bench/rotation/run.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-1}
for round in $(seq 1 "$rounds"); do
	echo "round ${round}/${rounds}" >&2
	cargo test -q --locked -p sigil-e2e --test pods -- rotation_under_load --nocapture >&2
	jq -c --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" '{date: $date} + .' \
		target/e2e/reports/rotation-under-load.json >>bench/rotation/results.jsonl
done
