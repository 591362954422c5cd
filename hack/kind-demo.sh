#!/usr/bin/env bash
# Sigil on a local kind cluster, end to end: create the cluster, build and load
# the image, install the Helm chart, create a SigningKey and the demo app, get
# a token from the issuer and call the app through the sidecar.
#
#   hack/kind-demo.sh          # or: make kind-demo
#   hack/kind-demo.sh down     # delete the cluster
#
# Needs docker, kind (0.29 or newer, for Kubernetes 1.33+), kubectl, helm and
# curl. Environment:
#   SIGIL_KIND_CLUSTER  cluster name (default sigil-demo, as in kind-config.yaml)
#   KIND_NODE_IMAGE     node image for `kind create cluster --image`, e.g. kindest/node:v1.34.0
#   SIGIL_IMAGE         image to build and load (default sigil:<chart appVersion>)
#
# Every manifest and values file applied here is validated against a real API
# server by `cargo test -p sigil-e2e --test chart`.
set -euo pipefail

cd "$(dirname "$0")/.."

cluster=${SIGIL_KIND_CLUSTER:-sigil-demo}
namespace=sigil
# The issuer and demo app node ports, mapped to the host by kind-config.yaml.
issuer_url=http://127.0.0.1:30080
app_url=http://127.0.0.1:30800
# The demo client of examples/issuer-clients.yaml. Its secret is public: this
# cluster is for trying Sigil out, nothing else.
client_id=demo-client
client_secret=demo-secret-change-me

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
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
image=${SIGIL_IMAGE:-sigil:$version}
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

say "image $image"
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

say "Helm chart into namespace $namespace (Pod Security: restricted)"
kc create namespace "$namespace" --dry-run=client -o yaml | kc apply -f -
kc label namespace "$namespace" --overwrite pod-security.kubernetes.io/enforce=restricted
kc apply -n "$namespace" -f examples/issuer-clients.yaml
helm upgrade --install sigil charts/sigil --kube-context "$context" -n "$namespace" \
    -f charts/sigil/ci/kind-demo-values.yaml \
    --set image.repository="${image%:*}" --set image.tag="${image##*:}"

say "SigningKey and demo app"
kc apply -n "$namespace" -f examples/signingkey.yaml
kc apply -n "$namespace" -f examples/demo-app.yaml
kc wait -n "$namespace" --for=condition=Ready signingkey/api --timeout=120s
kc get -n "$namespace" signingkeys
for deployment in sigil-operator sigil-issuer demo-app; do
    kc rollout status -n "$namespace" "deployment/$deployment" --timeout=300s
done

say "a token from the issuer ($issuer_url)"
response=$(curl -sS --fail-with-body -u "$client_id:$client_secret" -d grant_type=client_credentials "$issuer_url/token")
token=$(printf '%s' "$response" | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')
[[ -n $token ]] || die "no access_token in the issuer's answer: $response"
echo "got a token for $client_id (${#token} characters)"

status() { curl -sS -o /dev/null -w '%{http_code}' "$@"; }
say "calling the demo app through the sidecar ($app_url)"
without=$(status "$app_url/hello")
echo "without a token:           HTTP $without"
with=$(status -H "Authorization: Bearer $token" "$app_url/hello")
echo "with the token:            HTTP $with"
curl -sS -H "Authorization: Bearer $token" "$app_url/hello"
admin=$(status -H "Authorization: Bearer $token" "$app_url/admin")
echo "/admin without its scope:  HTTP $admin"
[[ $without == 401 && $with == 200 && $admin == 403 ]] || die "expected 401, 200 and 403"

say "done"
cat <<EOF
Try it yourself:
  TOKEN=\$(curl -s -u $client_id:$client_secret -d grant_type=client_credentials $issuer_url/token | sed -n 's/.*"access_token" *: *"\\([^"]*\\)".*/\\1/p')
  curl -H "Authorization: Bearer \$TOKEN" $app_url/hello
  curl $issuer_url/.well-known/jwks.json
  kubectl --context $context annotate -n $namespace sk api sigil.dev/rotate="\$(date +%s)" --overwrite   # rotate now
Delete the cluster: $0 down
EOF
