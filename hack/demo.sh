#!/usr/bin/env bash
# `make demo`: Sigil as pods on this machine. Builds what is missing (the
# Kubernetes binaries, once; Sigil's release build and images), starts a
# control plane and a node (hack/control-plane up --node: kubelet,
# containerd, kube-proxy), installs the Helm chart, a SigningKey and the demo
# app with its sidecar exactly as hack/kind-demo.sh does on kind, checks
# 401 / 200 / 403, prints commands to try, and tears everything down on
# Ctrl-C. Needs root (the node runs containers); Debian's packages it needs
# are installed when missing.
#
#   hack/demo.sh           # or: make demo
#
# Environment: SIGIL_DEMO_DIR (default target/demo) holds the cluster's
# state, certificates and logs while it runs.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=hack/demo-steps.sh
source hack/demo-steps.sh

((EUID == 0)) || {
	echo "demo: the node runs containers and needs root: sudo make demo" >&2
	exit 1
}
dir=${SIGIL_DEMO_DIR:-target/demo}

say "Kubernetes binaries (the first run builds them from Go modules: 10 to 20 minutes)"
hack/build-binaries.sh >/dev/null
say "Sigil's images (release build)"
mapfile -t archives < <(hack/build-images.sh --archive)
images=()
for archive in "${archives[@]}"; do
	images+=(--image "$archive")
done

say "control plane and node in ${dir}"
hack/control-plane down "$dir" --clean >/dev/null 2>&1 || :
env_file=$(mktemp)
trap 'rm -f "$env_file"' EXIT
hack/control-plane up "$dir" --node "${images[@]}" --watch-pid $$ >"$env_file"
# shellcheck disable=SC1090 # written by hack/control-plane
source "$env_file"
stop() {
	trap - INT TERM EXIT
	say "stopping"
	hack/control-plane down "$dir"
	rm -f "$env_file"
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

kc() { "$SIGIL_KUBECTL" "$@"; }
hc() { "$SIGIL_HELM" "$@"; }
kc apply --server-side -f crds/ >&2
kc wait --for=condition=Established crd/signingkeys.sigil.dev --timeout=60s >&2
demo_install

# The node ports of the kind demo (kind-config.yaml maps them to 127.0.0.1
# there); here they are on the node's address.
issuer_url=http://${SIGIL_NODE_IP}:30080
app_url=http://${SIGIL_NODE_IP}:30800
demo_check "$issuer_url" "$app_url"

say "Sigil is running as pods"
kc get -n "$namespace" pods -o wide
cat <<EOF

In another shell, point kubectl at this cluster:
  export KUBECONFIG=${KUBECONFIG} PATH=$(dirname "$SIGIL_KUBECTL"):\$PATH

EOF
demo_commands "$issuer_url" "$app_url" kubectl
echo
echo "Logs: ${dir}/logs and kubectl logs -n ${namespace} deploy/demo-app -c sigil-sidecar. Press Ctrl-C to stop."
while :; do sleep 3600; done
