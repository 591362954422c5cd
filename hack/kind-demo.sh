#!/usr/bin/env bash
# Sigil on a local kind cluster, end to end: create the cluster, build and load
# the image, install the Helm chart, create a SigningKey and the demo app, get
# a token from the issuer and call the app through the sidecar. The values,
# manifests and checks are the ones the real-node tests run
# (e2e/tests/pods.rs); only docker and kind's node image are not run there.
#
#   hack/kind-demo.sh          # or: make kind-demo
#   hack/kind-demo.sh down     # delete the cluster
#
# Needs docker, kind (0.29 or newer, for Kubernetes 1.33+), kubectl, helm and
# curl. Environment:
#   SIGIL_KIND_CLUSTER  cluster name (default sigil-demo, as in kind-config.yaml)
#   KIND_NODE_IMAGE     node image for `kind create cluster --image`, e.g. kindest/node:v1.34.0
#
# Every manifest and values file applied here is validated against a real API
# server by `cargo test -p sigil-e2e --test chart`.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=hack/demo-steps.sh
source hack/demo-steps.sh

cluster=${SIGIL_KIND_CLUSTER:-sigil-demo}
# The issuer and demo app node ports, mapped to the host by kind-config.yaml.
issuer_url=http://127.0.0.1:30080
app_url=http://127.0.0.1:30800

die() { printf 'kind-demo: %s\n' "$*" >&2; exit 1; }

need() {
    local missing=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        die "missing ${missing[*]}: install docker (https://docs.docker.com/engine/install/), kind (https://kind.sigs.k8s.io), kubectl and helm first"
    fi
}

if [[ ${1:-} == down ]]; then
    need kind
    kind delete cluster --name "$cluster"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [down]"

need docker kind kubectl helm curl
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable (is it running, and may this user use it?)"

version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/sigil/Chart.yaml)
[[ -n $version ]] || die "cannot read appVersion from charts/sigil/Chart.yaml"
images=(sigil-operator sigil-issuer sigil-sidecar sigil-demo-app)
context=kind-$cluster
kc() { kubectl --context "$context" "$@"; }

say "kind cluster $cluster"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    echo "exists; reusing it (delete it with: $0 down)"
else
    kind create cluster --name "$cluster" --config kind-config.yaml ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi
minor=$(kc version -o json | sed -n '/"serverVersion"/,/}/s/.*"minor": *"\([0-9]*\).*/\1/p')
if [[ -z $minor || $minor -lt 33 ]]; then
    die "the cluster runs Kubernetes 1.${minor:-?}; Sigil needs 1.33 or newer: use kind 0.29+ or set KIND_NODE_IMAGE=kindest/node:v1.33.1 (and run: $0 down)"
fi

say "images ${images[*]} (tag $version)"
for image in "${images[@]}"; do
    docker build --target "$image" -t "$image:$version" .
    kind load docker-image "$image:$version" --name "$cluster"
done

hc() { helm --kube-context "$context" "$@"; }
demo_install
demo_check "$issuer_url" "$app_url" || die "the demo did not answer as it should"

say "done"
demo_commands "$issuer_url" "$app_url" "kubectl --context $context"
echo "Delete the cluster: $0 down"
