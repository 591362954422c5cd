# Sigil's developer entry points. README.md explains each.
CARGO ?= cargo

.PHONY: all generate check-generated lint test fuzz build image demo demo-local kind-demo control-plane-binaries

all: lint test

## generate: rewrite crds/signingkey.yaml and crds/sigilclient.yaml (and the chart's copies) from the Rust types (api/src/signing_key.rs, api/src/sigil_client.rs)
generate:
	$(CARGO) run -q -p sigil-api --bin crdgen -- signingkey > crds/signingkey.yaml
	$(CARGO) run -q -p sigil-api --bin crdgen -- sigilclient > crds/sigilclient.yaml
	cp crds/signingkey.yaml crds/sigilclient.yaml charts/sigil/crds/

## check-generated: fail when the committed CRD differs from the Rust types
check-generated: generate
	git diff --exit-code -- crds/ charts/sigil/crds/

## lint: formatting, clippy with warnings as errors, dependency policy
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) deny --log-level error check bans licenses sources
	@# The sidecar runs in every app pod: no Kubernetes client in it.
	@! $(CARGO) tree --locked -p sigil-sidecar -e normal | grep -E ' (kube|kube-[a-z]+|k8s-openapi) v' \
		|| { echo "sigil-sidecar depends on a Kubernetes crate (cargo tree above)"; exit 1; }
	shellcheck -x hack/*.sh hack/control-plane hack/tools/kubernetes/gen-replaces.sh

## build: release binaries of the operator, issuer, sidecar and demo app (the Dockerfile's exact build)
build:
	$(CARGO) build --release --locked -p sigil-operator -p sigil-issuer -p sigil-sidecar -p sigil-e2e \
		--bin sigil-operator --bin sigil-issuer --bin sigil-sidecar --bin sigil-demo-app

## image: the sigil-operator, sigil-issuer, sigil-sidecar and sigil-demo-app images, as archives in target/images
image:
	hack/build-images.sh

## demo: Sigil as pods on this machine (control plane, node, Helm chart, demo app); needs root
demo:
	hack/demo.sh

## demo-local: the faster demo without pods: the same binaries as local processes
demo-local:
	$(CARGO) run -q -p sigil-e2e --bin sigil-demo

## kind-demo: Sigil on a local kind cluster (needs docker, kind, kubectl, helm): 200 with a token, 401 without
kind-demo:
	hack/kind-demo.sh

## control-plane-binaries: build (once, cached) etcd, the Kubernetes binaries, kubectl, helm and crictl
control-plane-binaries:
	hack/build-binaries.sh

# PyJWT, the independent verifier the issuer's tests check tokens with.
TEST_PYTHON := target/test-python

$(TEST_PYTHON)/.installed: issuer/tests/requirements.txt
	python3 -m venv $(TEST_PYTHON)
	$(TEST_PYTHON)/bin/pip install -q -r issuer/tests/requirements.txt
	touch $@

## fuzz: each sidecar fuzz target for FUZZ_SECONDS (20) on a nightly toolchain (cargo fuzz); new corpus inputs land in sidecar/fuzz/corpus
FUZZ_SECONDS ?= 20
FUZZ_TARGETS = path_normalize compact_jws strict_json bearer
fuzz:
	cd sidecar/fuzz && for target in $(FUZZ_TARGETS); do \
		$(CARGO) +nightly fuzz run -O $$target -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
	done

## test: every test tier (installs PyJWT into target/test-python on first use)
test: $(TEST_PYTHON)/.installed
	SIGIL_TEST_PYTHON=$(CURDIR)/$(TEST_PYTHON)/bin/python $(CARGO) test --workspace --locked
