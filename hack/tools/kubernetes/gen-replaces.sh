#!/usr/bin/env bash
# Pins the builder module to one Kubernetes release and regenerates its
# replace directives.
#
# k8s.io/kubernetes replaces its ~33 staging modules (k8s.io/api,
# k8s.io/client-go, ...) with ./staging/src paths and requires them at
# v0.0.0. A dependent module ignores those replaces, so without its own
# "k8s.io/X => k8s.io/X v0.M.P" lines it cannot resolve v0.0.0 at all. The
# list changes between releases, so it is read from the release's own go.mod
# rather than typed by hand.
#
# Usage: gen-replaces.sh [v1.MINOR.PATCH]   (default: the version go.mod requires)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

version=${1:-$(go mod edit -json | jq -r '.Require[] | select(.Path == "k8s.io/kubernetes") | .Version')}
if [[ ! $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
	echo "gen-replaces: want a release like v1.36.3, got '${version}'" >&2
	exit 1
fi
# Staging modules are tagged v0.MINOR.PATCH for Kubernetes v1.MINOR.PATCH.
staging_version="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"

upstream_mod=$(go mod download -json "k8s.io/kubernetes@${version}" | jq -r '.GoMod')
mapfile -t staging < <(go mod edit -json "$upstream_mod" |
	jq -r '.Replace[] | select(.New.Path | startswith("./staging/")) | .Old.Path' | sort)
if ((${#staging[@]} == 0)); then
	echo "gen-replaces: no staging replaces found in ${upstream_mod}" >&2
	exit 1
fi

# Start from a clean slate so modules dropped upstream do not linger here.
edits=()
while read -r old; do
	edits+=("-dropreplace=${old}")
done < <(go mod edit -json | jq -r '(.Replace // [])[] | .Old.Path')
edits+=("-require=k8s.io/kubernetes@${version}")
for mod in "${staging[@]}"; do
	edits+=("-replace=${mod}=${mod}@${staging_version}")
done
go mod edit "${edits[@]}"
go mod tidy

echo "gen-replaces: k8s.io/kubernetes ${version}, ${#staging[@]} staging modules at ${staging_version}" >&2
