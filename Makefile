# Sigil's developer entry points. README.md explains each.
CARGO ?= cargo

.PHONY: all generate check-generated lint test build demo control-plane-binaries

all: lint test

## generate: rewrite crds/signingkey.yaml from the Rust types (api/src/signing_key.rs)
generate:
	$(CARGO) run -q -p sigil-api --bin crdgen > crds/signingkey.yaml

## check-generated: fail when the committed CRD differs from the Rust types
check-generated: generate
	git diff --exit-code -- crds/

## lint: formatting, clippy with warnings as errors, dependency policy
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) deny --log-level error check bans licenses sources
	shellcheck hack/*.sh hack/control-plane hack/tools/kubernetes/gen-replaces.sh

## build: release binaries of the operator, issuer and sidecar
build:
	$(CARGO) build --release --locked --bins

## demo: the whole system on this machine (control plane, operator, issuer, sidecar, demo app)
demo:
	$(CARGO) run -q -p sigil-e2e --bin sigil-demo

## control-plane-binaries: build (once, cached) kube-apiserver, etcd, kube-controller-manager, kubectl, helm
control-plane-binaries:
	hack/build-binaries.sh

## test: every test tier
test:
	$(CARGO) test --workspace --locked
