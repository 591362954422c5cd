# syntax=docker/dockerfile:1
#
# One image with Sigil's three binaries: sigil-operator, sigil-issuer and
# sigil-sidecar, in /usr/local/bin of a distroless base, run as UID 65532.
#
#   docker build -t sigil:0.1.0 .          # the tag the Helm chart uses by default
#   docker run --rm sigil:0.1.0 sigil-issuer --help
#   printf %s "$SECRET" | docker run --rm -i sigil:0.1.0 sigil-issuer hash-secret
#
# BuildKit (Docker's default builder since 23.0) is required for the cache
# mounts below.

ARG RUST_VERSION=1.95

# --- builder: a release build of the three binaries ---------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# Dependency caching: the cargo registry and the target directory live in
# BuildKit cache mounts, which persist between builds but never become image
# layers. A change to Sigil's sources recompiles only Sigil's own crates; a
# Cargo.lock change recompiles only what changed. The first build compiles
# everything (a few minutes).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
        -p sigil-operator -p sigil-issuer -p sigil-sidecar \
        --bin sigil-operator --bin sigil-issuer --bin sigil-sidecar \
 && mkdir -p /out \
 && cp target/release/sigil-operator target/release/sigil-issuer target/release/sigil-sidecar /out/

# --- final: the binaries on distroless, nothing else --------------------------
# distroless/cc: glibc and libgcc (the binaries link them dynamically, and
# glibc's allocator is far faster than musl's under the sidecar's load), CA
# certificates and tzdata; no shell, no package manager. The :nonroot tag runs
# as UID/GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="sigil" \
      org.opencontainers.image.description="Kubernetes-native JWT signing: sigil-operator, sigil-issuer, sigil-sidecar" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/ /usr/local/bin/
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
