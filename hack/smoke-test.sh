#!/usr/bin/env bash
# End-to-end check of hack/control-plane: starts one, exercises what Sigil's
# tests rely on (TokenRequest and TokenReview, OIDC discovery, controllers,
# PodSecurity, CEL validation on a CRD, helm), stops it and checks nothing is
# left listening. Ends with "N passed, N failed"; exits non-zero on a failure.
set -euo pipefail

hack=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/sigil-smoke.XXXXXX")
passed=0 failed=0

# The watchdog guards against this script dying half-way.
start=$SECONDS
"$hack/control-plane" up "$dir" --watch-pid $$ >/dev/null
echo "up: ready in $((SECONDS - start))s"
# shellcheck source=/dev/null
. "$dir/env"
trap '"$hack/control-plane" down "$dir" --clean 2>/dev/null || true' EXIT

k() { "$SIGIL_KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
admin_curl() {
	curl -fsS --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" "$SIGIL_APISERVER$1"
}
# check NAME COMMAND...: COMMAND must succeed; polls for up to 30s.
check() {
	local name=$1 deadline=$((SECONDS + 30))
	shift
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			echo "FAIL ${name}"
			failed=$((failed + 1))
			return 0
		fi
		sleep 0.5
	done
	echo "ok   ${name}"
	passed=$((passed + 1))
}
fails() { ! "$@"; }
gone() { [[ -z $(k "$@" --ignore-not-found -o name) ]]; }

server_version() { [[ $(k version -o json | jq -r .serverVersion.gitVersion) == v1.36.* ]]; }
check "server reports v1.36" server_version
check "namespaces listed" k get ns default
check "create namespace" k create ns smoke
check "default ServiceAccount appears" k -n smoke get sa default
check "kube-root-ca.crt published" k -n smoke get cm kube-root-ca.crt
check "create ServiceAccount" k -n smoke create sa signer
token=$(k -n smoke create token signer --audience=sigil-smoke --duration=10m)
check "TokenRequest issues a JWT" test "$(tr -cd . <<<"$token" | wc -c)" = 2
review() {
	k create -o jsonpath='{.status.authenticated}' -f - <<EOF | grep -qx true
apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec: {token: "$token", audiences: [sigil-smoke]}
EOF
}
check "TokenReview accepts it" review
discovery() { [[ $(admin_curl /.well-known/openid-configuration | jq -r .issuer) == "$SIGIL_SA_ISSUER" ]]; }
jwks() { (($(admin_curl /openid/v1/jwks | jq '.keys | length') >= 1)); }
check "OIDC discovery names the issuer" discovery
check "JWKS served" jwks

check "create Deployment" k -n smoke create deployment web --image=registry.invalid/web:1 --replicas=2
replicaset() { [[ -n $(k -n smoke get rs -l app=web -o name) ]]; }
two_pods() { (($(k -n smoke get pods -l app=web -o name | wc -l) == 2)); }
check "ReplicaSet created by the controller-manager" replicaset
check "Pods created by the ReplicaSet" two_pods
k -n smoke delete deployment web --wait=false >/dev/null
check "garbage collector removes the ReplicaSet" gone -n smoke rs -l app=web

k create ns restricted >/dev/null
k label ns restricted pod-security.kubernetes.io/enforce=restricted >/dev/null
check "PodSecurity rejects a root pod" fails k -n restricted run bad --image=registry.invalid/x:1
restricted_pod() {
	k -n restricted apply -f - <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: good}
spec:
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: c
    image: registry.invalid/x:1
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
EOF
}
check "PodSecurity admits a restricted pod" restricted_pod

crd() {
	k apply -f - <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.sigil.dev}
spec:
  group: smoke.sigil.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - {rule: "self.min <= self.max", message: "min must not exceed max"}
            properties:
              min: {type: integer}
              max: {type: integer}
EOF
}
widget() {
	printf 'apiVersion: smoke.sigil.dev/v1\nkind: Widget\nmetadata: {name: %s}\nspec: {min: %d, max: %d}\n' "$@" |
		k -n smoke apply -f -
}
crd_established() { crd && k wait --for=condition=Established crd/widgets.smoke.sigil.dev --timeout=20s; }
check "CRD established" crd_established
check "CEL rule admits a valid object" widget ok 1 3
check "CEL rule rejects an invalid object" fails widget bad 5 3

k delete ns smoke --wait=false >/dev/null
check "namespace controller deletes the namespace" gone ns smoke
check "helm runs" "$SIGIL_HELM" version --short

ports=$(ss -Hltnp 2>/dev/null | grep -E '"(etcd|kube-apiserver|kube-controller)"' || true)
loopback_only() { [[ -n $ports ]] && ! awk '{print $4}' <<<"$ports" | grep -v '^127\.0\.0\.1:'; }
check "nothing listens beyond loopback" loopback_only

mapfile -t pids < <(awk '{print $2}' "$dir/pids")
start=$SECONDS
"$hack/control-plane" down "$dir" 2>/dev/null
echo "down: stopped in $((SECONDS - start))s"
# An exited process has no /proc entry, or (unreaped) an empty command line.
all_stopped() {
	local p
	for p in "${pids[@]}"; do
		[[ -z $(tr -d '\0' <"/proc/${p}/cmdline" 2>/dev/null) ]] || return 1
	done
}
check "down leaves no process running" all_stopped

echo "${passed} passed, ${failed} failed"
((failed == 0))
