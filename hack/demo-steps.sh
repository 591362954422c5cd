# shellcheck shell=bash
# The demo's steps, shared by hack/demo.sh (this machine's node) and
# hack/kind-demo.sh (kind): the same namespace, values, manifests and checks,
# which e2e/tests/pods.rs runs on every `make test`. Sourced; the caller
# defines kc (kubectl for the cluster) and hc (helm for the cluster).

# The namespace the examples expect: the sidecar's --issuer in
# examples/demo-app.yaml names the issuer Service in it.
namespace=sigil
# The demo client of examples/issuer-clients.yaml. Its secret is public:
# this cluster is for trying Sigil out, nothing else.
client_id=demo-client
client_secret=demo-secret-change-me

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

# demo_install: the Helm chart into a namespace enforcing Pod Security
# "restricted", the SigningKey, and the demo app with its sidecar; returns
# when every pod is Ready.
demo_install() {
	say "Helm chart into namespace ${namespace} (Pod Security: restricted)"
	kc create namespace "$namespace" --dry-run=client -o yaml | kc apply -f - >&2
	kc label namespace "$namespace" --overwrite pod-security.kubernetes.io/enforce=restricted >&2
	kc apply -n "$namespace" -f examples/issuer-clients.yaml >&2
	hc upgrade --install sigil charts/sigil -n "$namespace" -f charts/sigil/ci/kind-demo-values.yaml >&2

	say "SigningKey and demo app"
	kc apply -n "$namespace" -f examples/signingkey.yaml >&2
	kc apply -n "$namespace" -f examples/demo-app.yaml >&2
	kc wait -n "$namespace" --for=condition=Ready signingkey/api --timeout=120s >&2
	kc get -n "$namespace" signingkeys >&2
	local deployment
	for deployment in sigil-operator sigil-issuer demo-app; do
		kc rollout status -n "$namespace" "deployment/$deployment" --timeout=300s >&2
	done
}

# demo_token ISSUER_URL prints a token for the demo client.
demo_token() {
	local response token
	response=$(curl -sS --fail-with-body -u "$client_id:$client_secret" -d grant_type=client_credentials "$1/token") ||
		return 1
	token=$(printf '%s' "$response" | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')
	[[ -n $token ]] || return 1
	echo "$token"
}

# demo_check ISSUER_URL APP_URL: a token from the issuer, then the app
# through its sidecar: 401 without it, 200 with it, 403 for /admin.
demo_check() {
	local issuer_url=$1 app_url=$2 token try
	say "a token from the issuer (${issuer_url})"
	# A new Service is routed a moment after it exists.
	for try in $(seq 1 30); do
		token=$(demo_token "$issuer_url" 2>/dev/null) && break
		sleep 1
	done
	[[ -n ${token:-} ]] || {
		echo "no token from ${issuer_url} after ${try} tries" >&2
		return 1
	}
	echo "got a token for $client_id (${#token} characters)" >&2

	status() { curl -sS -o /dev/null -w '%{http_code}' "$@"; }
	say "calling the demo app through the sidecar (${app_url})"
	local without with admin
	without=$(status "$app_url/hello")
	echo "without a token:           HTTP $without" >&2
	with=$(status -H "Authorization: Bearer $token" "$app_url/hello")
	echo "with the token:            HTTP $with" >&2
	curl -sS -H "Authorization: Bearer $token" "$app_url/hello" >&2
	admin=$(status -H "Authorization: Bearer $token" "$app_url/admin")
	echo "/admin without its scope:  HTTP $admin" >&2
	if [[ $without != 401 || $with != 200 || $admin != 403 ]]; then
		echo "expected 401, 200 and 403" >&2
		return 1
	fi
}

# demo_commands ISSUER_URL APP_URL KUBECTL: what to try next.
demo_commands() {
	cat <<EOF
Try it yourself:
  TOKEN=\$(curl -s -u $client_id:$client_secret -d grant_type=client_credentials $1/token | sed -n 's/.*"access_token" *: *"\\([^"]*\\)".*/\\1/p')
  curl -H "Authorization: Bearer \$TOKEN" $2/hello     # 200, the caller's identity
  curl -i $2/hello                                    # 401
  curl $1/.well-known/jwks.json
  $3 get -n $namespace signingkeys,pods
  $3 annotate -n $namespace sk api sigil.dev/rotate="\$(date +%s)" --overwrite   # rotate now
EOF
}
