# syntax=docker/dockerfile:1
#
# Sigil's images, one per binary so an app pod carries only the sidecar:
# sigil-operator, sigil-issuer, sigil-sidecar and the demo app, each the
# binary in /usr/local/bin of a distroless base, run as UID 65532, no shell.
#
#   for image in sigil-operator sigil-issuer sigil-sidecar sigil-demo-app; do
#     docker build --target "$image" -t "$image:0.1.0" .   # the tags the chart and examples use
#   done
#   docker run --rm sigil-issuer:0.1.0 --help
#   printf %s "$SECRET" | docker run --rm -i sigil-issuer:0.1.0 hash-secret
#
# Without a container engine that can pull (our own machines),
# hack/build-images.sh assembles the same final layout from Debian's packages.
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
        -p sigil-operator -p sigil-issuer -p sigil-sidecar -p sigil-e2e \
        --bin sigil-operator --bin sigil-issuer --bin sigil-sidecar --bin sigil-demo-app \
 && mkdir -p /out \
 && cp target/release/sigil-operator target/release/sigil-issuer target/release/sigil-sidecar \
       target/release/sigil-demo-app /out/

# --- final images: one binary each on distroless, nothing else -----------------
# distroless/cc: glibc and libgcc (the binaries link them dynamically, and
# glibc's allocator is far faster than musl's under the sidecar's load), CA
# certificates and tzdata; no shell, no package manager. The :nonroot tag runs
# as UID/GID 65532; USER repeats it numerically, so the kubelet can check
# runAsNonRoot without reading /etc/passwd.
FROM gcr.io/distroless/cc-debian12:nonroot AS base
LABEL org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532

FROM base AS sigil-operator
LABEL org.opencontainers.image.title="sigil-operator"
COPY --from=builder /out/sigil-operator /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/sigil-operator"]

FROM base AS sigil-issuer
LABEL org.opencontainers.image.title="sigil-issuer"
COPY --from=builder /out/sigil-issuer /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/sigil-issuer"]

FROM base AS sigil-demo-app
LABEL org.opencontainers.image.title="sigil-demo-app"
COPY --from=builder /out/sigil-demo-app /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/sigil-demo-app"]

# Last, so a plain `docker build .` gives the image every app pod carries.
FROM base AS sigil-sidecar
LABEL org.opencontainers.image.title="sigil-sidecar"
COPY --from=builder /out/sigil-sidecar /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/sigil-sidecar"]
