#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules and prints the one
# directory that holds all of them:
#   kube-apiserver kube-controller-manager kubectl etcd helm
# and, for the node mode (hack/control-plane --node):
#   kube-scheduler kubelet kube-proxy crictl
#
# Versions are the ones pinned in hack/tools/{kubernetes,etcd,helm}/go.mod, so
# bumping a version is a go.mod change and nothing here. Each binary is cached
# outside the repo, keyed by version, so fresh clones on the same machine reuse
# it: ${SIGIL_CACHE_DIR:-$HOME/.cache/sigil}/bin/<name>-<version>/<name>.
# The printed directory is a farm of symlinks into that cache.
#
# Overrides (nothing is built):
#   SIGIL_BIN_DIR=DIR        a directory with all five binaries (helm optional)
#   KUBEBUILDER_ASSETS=DIR   envtest layout: kube-apiserver, etcd, kubectl;
#                            kube-controller-manager is used if present
#
# Only the directory goes to stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools="${here}/tools"

log() { echo "build-binaries: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# check_dir DIR REQUIRED... prints DIR if every required binary is executable.
check_dir() {
	local dir=$1 name
	shift
	[[ -d $dir ]] || die "${dir} is not a directory"
	for name in "$@"; do
		[[ -x ${dir}/${name} ]] || die "${dir}/${name} is missing or not executable"
	done
	(cd "$dir" && pwd)
}

if [[ -n ${SIGIL_BIN_DIR:-} ]]; then
	check_dir "$SIGIL_BIN_DIR" kube-apiserver etcd kubectl kube-controller-manager
	exit 0
fi
if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then
	dir=$(check_dir "$KUBEBUILDER_ASSETS" kube-apiserver etcd kubectl)
	[[ -x ${dir}/kube-controller-manager ]] ||
		log "warning: no kube-controller-manager in KUBEBUILDER_ASSETS; the control plane will run without it"
	echo "$dir"
	exit 0
fi

command -v go >/dev/null || die "go is required (https://go.dev/doc/install)"
command -v jq >/dev/null || die "jq is required (apt-get install jq)"

# module_version MODULE_DIR MODULE_PATH prints the version go.mod requires.
# Parsing go.mod (not `go list`) keeps the warm path offline and instant.
module_version() {
	local v
	v=$(go mod edit -json "$1/go.mod" | jq -r --arg p "$2" '.Require[] | select(.Path == $p) | .Version')
	[[ -n $v ]] || die "$1/go.mod does not require $2"
	echo "$v"
}

k8s_version=$(module_version "${tools}/kubernetes" k8s.io/kubernetes)
etcd_version=$(module_version "${tools}/etcd" go.etcd.io/etcd/server/v3)
helm_version=$(module_version "${tools}/helm" helm.sh/helm/v3)
crictl_version=$(module_version "${tools}/cri-tools" sigs.k8s.io/cri-tools)

# Every Kubernetes binary the harness runs, all from the one pinned release.
k8s_names=(kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy)

cache=${SIGIL_CACHE_DIR:-${HOME}/.cache/sigil}
bin="${cache}/bin"
mkdir -p "$bin"

# Concurrent callers (parallel test binaries, two checkouts) wait for one build.
exec 9>"${bin}/.lock"
flock 9

# Builds land in a scratch dir next to the cache and are moved into place, so
# an interrupted build never leaves a truncated binary behind.
work=$(mktemp -d "${bin}/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
scratch() { mktemp -d "${work}/XXXXXX"; }

# binary_path NAME VERSION
binary_path() { echo "${bin}/$1-$2/$1"; }

# release_time MODULE@VERSION prints the release's commit time, used as
# buildDate so rebuilds of one version are reproducible.
release_time() {
	local info
	info=$(go mod download -json "$1" | jq -r '.Info // empty')
	[[ -z $info ]] || jq -r '.Time // empty' "$info"
}

# Upstream release flags: static, no debug info, no test-only code paths.
# -buildvcs=false: the enclosing git repo is Sigil's, not the binaries'.
# The machine has 2 cores: -p 2 keeps the build from oversubscribing them.
go_build() {
	CGO_ENABLED=0 go build -p 2 -trimpath -buildvcs=false "$@"
}

# install_built TMPDIR NAME VERSION moves one fresh binary into the cache.
install_built() {
	local dest
	dest=$(binary_path "$2" "$3")
	mkdir -p "$(dirname "$dest")"
	mv -f "$1/$2" "$dest"
}

build_kubernetes() {
	local names=("${k8s_names[@]}") name missing=0
	for name in "${names[@]}"; do
		[[ -x $(binary_path "$name" "$k8s_version") ]] || missing=1
	done
	((missing)) || return 0

	log "building ${names[*]} ${k8s_version} (cold: many minutes on 2 cores)"
	[[ $k8s_version =~ ^v([0-9]+)\.([0-9]+)\. ]] || die "unexpected Kubernetes version ${k8s_version}"
	local major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]} date ldflags="-s -w" pkg tmp
	date=$(cd "${tools}/kubernetes" && release_time "k8s.io/kubernetes@${k8s_version}")
	# Both version packages: component-base feeds /version and --version,
	# client-go feeds kubectl's client version and user agents.
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X ${pkg}.gitVersion=${k8s_version}"
		ldflags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
		ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${date}"
		# Modules carry no commit; say so rather than leave "$Format:%H$".
		ldflags+=" -X ${pkg}.gitCommit="
	done
	tmp=$(scratch)
	# One go build for all of them: they share most packages.
	(cd "${tools}/kubernetes" && go_build -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "${tmp}/" \
		"${names[@]/#/k8s.io/kubernetes/cmd/}")
	for name in "${names[@]}"; do
		install_built "$tmp" "$name" "$k8s_version"
	done
}

build_etcd() {
	[[ -x $(binary_path etcd "$etcd_version") ]] && return 0
	log "building etcd ${etcd_version}"
	local tmp
	tmp=$(scratch)
	(cd "${tools}/etcd" && go_build -ldflags "-s -w" -o "${tmp}/etcd" go.etcd.io/etcd/server/v3)
	install_built "$tmp" etcd "$etcd_version"
}

build_helm() {
	[[ -x $(binary_path helm "$helm_version") ]] && return 0
	log "building helm ${helm_version}"
	local tmp client_go k8s_major k8s_minor ldflags pkg
	# Like helm's Makefile: its offline default kubeVersion (helm template,
	# helm lint) is the Kubernetes release its client-go belongs to.
	client_go=$(cd "${tools}/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
	[[ $client_go =~ ^v0\.([0-9]+)\. ]] || die "unexpected client-go version ${client_go} in helm's module"
	k8s_major=1 k8s_minor=${BASH_REMATCH[1]}
	ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${helm_version}"
	ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
		ldflags+=" -X ${pkg}.k8sVersionMajor=${k8s_major} -X ${pkg}.k8sVersionMinor=${k8s_minor}"
	done
	tmp=$(scratch)
	(cd "${tools}/helm" && go_build -ldflags "$ldflags" -o "${tmp}/helm" helm.sh/helm/v3/cmd/helm)
	install_built "$tmp" helm "$helm_version"
}

build_crictl() {
	[[ -x $(binary_path crictl "$crictl_version") ]] && return 0
	log "building crictl ${crictl_version}"
	local tmp
	tmp=$(scratch)
	(cd "${tools}/cri-tools" && go_build -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${crictl_version}" \
		-o "${tmp}/crictl" sigs.k8s.io/cri-tools/cmd/crictl)
	install_built "$tmp" crictl "$crictl_version"
}

start=$SECONDS
build_etcd
build_helm
build_crictl
build_kubernetes
(((SECONDS - start) > 1)) && log "built in $((SECONDS - start))s"

# One directory per combination of versions, so a bump never mixes releases.
farm="${bin}/current-k8s-${k8s_version}-etcd-${etcd_version}-helm-${helm_version}-crictl-${crictl_version}"
mkdir -p "$farm"
pairs=(etcd:"$etcd_version" helm:"$helm_version" crictl:"$crictl_version")
for name in "${k8s_names[@]}"; do
	pairs+=("${name}:${k8s_version}")
done
for pair in "${pairs[@]}"; do
	name=${pair%%:*}
	ln -sfn "$(binary_path "$name" "${pair#*:}")" "${farm}/${name}"
done
echo "$farm"
