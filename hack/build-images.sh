#!/usr/bin/env bash
# Builds Sigil's container images without a container registry or a pull:
# each image is the Dockerfile's final stage (distroless/cc: the binary, the
# glibc libraries it links, CA certificates, UID 65532, no shell) assembled
# from this machine's release build and Debian's packages, built with podman
# from scratch and saved as an image archive that `ctr images import`,
# `docker load`, `kind load image-archive` and `podman load` all take.
#
#   hack/build-images.sh [--archive] [NAME...]
#
# NAME: operator, issuer, sidecar, demo-app (the default: all four) or pause
# (the node's pod sandbox, hack/pause/pause.c). Archives land in
# ${CARGO_TARGET_DIR:-target}/images/sigil-NAME.tar, tagged
# docker.io/library/sigil-NAME:<chart appVersion> (what `sigil-NAME:<version>`
# in a pod spec means). Progress and image sizes go to stderr; with
# --archive, only the archive paths go to stdout, one a line.
#
# With docker, build the same images from the Dockerfile instead:
#   docker build --target sigil-issuer -t sigil-issuer:0.1.0 .
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { echo "build-images: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

print_archives=0
names=()
for arg in "$@"; do
	case $arg in
	--archive) print_archives=1 ;;
	operator | issuer | sidecar | demo-app | pause) names+=("$arg") ;;
	*) die "unknown image '${arg}' (operator, issuer, sidecar, demo-app, pause)" ;;
	esac
done
((${#names[@]})) || names=(operator issuer sidecar demo-app)

for cmd in podman cc ldd strip; do
	command -v "$cmd" >/dev/null || die "${cmd} is required (Debian: podman, gcc, libc-bin, binutils)"
done
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || die "no CA bundle (Debian: ca-certificates)"

version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/sigil/Chart.yaml")
[[ -n $version ]] || die "cannot read appVersion from charts/sigil/Chart.yaml"
target=${CARGO_TARGET_DIR:-$root/target}
out="$target/images"
mkdir -p "$out"

# Sigil's binaries: the Dockerfile's release build, plus the demo app.
binaries=()
for name in "${names[@]}"; do
	[[ $name == pause ]] || binaries+=(--bin "sigil-${name}")
done
if ((${#binaries[@]})); then
	log "cargo build --release ${binaries[*]}"
	(cd "$root" && cargo build -q --release --locked -p sigil-operator -p sigil-issuer -p sigil-sidecar -p sigil-e2e \
		"${binaries[@]}" >&2) || die "cargo build failed"
fi

# podman keeps its layers in a scratch store that goes when we are done, so
# nothing of it stays on the machine.
# Its run root must be a short path (podman refuses one over 50 characters),
# whatever directory the checkout is in.
store=$(mktemp -d "$out/.podman.XXXXXX")
run=$(mktemp -d /tmp/sigil-podman.XXXXXX)
trap 'podman --root "$store/root" --runroot "$run" --storage-driver vfs system reset -f >/dev/null 2>&1; rm -rf "$store" "$run"' EXIT
pod() { podman --root "$store/root" --runroot "$run" --storage-driver vfs "$@"; }

# rootfs DIR BINARY: the binary in /usr/local/bin, every shared library it
# loads at the path the loader finds it, CA certificates, and the nonroot user.
rootfs() {
	local dir=$1 bin=$2 lib
	mkdir -p "$dir/usr/local/bin" "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot"
	chmod 1777 "$dir/tmp"
	cp "$bin" "$dir/usr/local/bin/"
	strip "$dir/usr/local/bin/$(basename "$bin")"
	while read -r lib; do
		mkdir -p "$dir$(dirname "$lib")"
		cp -L "$lib" "$dir$lib"
	done < <(ldd "$bin" | grep -oE '/[^ ]+' | sort -u)
	cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
	printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' \
		>"$dir/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$dir/etc/group"
	chown 65532:65532 "$dir/home/nonroot"
}

for name in "${names[@]}"; do
	image="sigil-${name}"
	ref="docker.io/library/${image}:${version}"
	ctx="$store/ctx-${name}"
	mkdir -p "$ctx/rootfs"
	if [[ $name == pause ]]; then
		cc -static -Os -Wall -Wextra -Werror -o "$ctx/rootfs/pause" "$root/hack/pause/pause.c"
		strip "$ctx/rootfs/pause"
		entrypoint='"/pause"' user=65535:65535
	else
		rootfs "$ctx/rootfs" "$target/release/${image}"
		entrypoint="\"/usr/local/bin/${image}\"" user=65532:65532
	fi
	cat >"$ctx/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
USER ${user}
ENTRYPOINT [${entrypoint}]
LABEL org.opencontainers.image.title="${image}" org.opencontainers.image.version="${version}" \\
      org.opencontainers.image.licenses="Apache-2.0"
EOF
	# --timestamp 0: the same inputs give the same image id.
	pod build -q --timestamp 0 -t "$ref" "$ctx" >/dev/null || die "podman build of ${image} failed"
	rm -f "$out/${image}.tar"
	pod save -q --format docker-archive -o "$out/${image}.tar" "$ref" || die "podman save of ${image} failed"
	size=$(pod image inspect --format '{{.Size}}' "$ref")
	log "${ref}: $((size / 1024 / 1024)) MiB ($(du -h "$out/${image}.tar" | cut -f1) archive) -> ${out}/${image}.tar"
	if ((print_archives)); then
		echo "$out/${image}.tar"
	fi
done
