# Lifeboat — the targets a developer and CI use. `make help` lists them.
SHELL := bash
CARGO ?= cargo
KUBECONFIG_DEMO ?= target/demo/kubeconfig

.PHONY: help deps build test unit integration lint fmt crds manifests chart-readme helm promtool testenv testenv-up bench bench-agent bench-operator bench-testenv node node-images node-up e2e-node demo demo-local ci clean-testenv

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

deps: ## Install what a fresh machine lacks (PostgreSQL 15, Redis, rclone); idempotent
	bash hack/install-deps.sh

build: ## Build every crate
	$(CARGO) build --workspace --all-targets

manifests: ## Render the chart into deploy/generated/ (what `kubectl apply -k deploy/` installs)
	bash hack/render-manifests.sh

chart-readme: ## Generate charts/lifeboat/README.md (every value) from the comments of values.yaml
	bash hack/chart-readme.sh

helm: ## Build (or reuse) helm from its Go module into target/tools/
	bash hack/tools/helm.sh

promtool: ## Build (or reuse) promtool from the Prometheus Go module into target/tools/ (the alert-rule tests)
	bash hack/tools/promtool.sh

testenv: ## Build (or reuse) the test control plane: etcd, kube-apiserver, kube-controller-manager, kubectl
	bash hack/testenv/build.sh

lint: ## rustfmt and clippy, warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p lifeboat-agent --features fault-injection --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate crds/, the chart's copy and docs/api-reference.md from the Rust types
	$(CARGO) run -q -p lifeboat-api --bin crdgen -- crds/ docs/api-reference.md
	cp crds/*.yaml charts/lifeboat/files/crds/
	bash hack/render-manifests.sh

unit: ## Fast tests: no servers, no cluster
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test -p lifeboat-api --tests

integration: testenv helm promtool ## Tests against the real control plane (and real PostgreSQL/Redis where needed)
	$(CARGO) test --workspace
	$(CARGO) test --workspace --features lifeboat-agent/fault-injection --test kill

# The node tests are selected with --workspace, not -p: the same feature set as the workspace run
# above, so no dependency is compiled a second time (on a fresh machine that cost GBs of disk).
test: deps testenv helm node node-images lint promtool ## The whole suite: lint, unit, integration and the node's end-to-end tests (what .ci/run runs)
	$(CARGO) test --workspace
	$(CARGO) test --workspace --features lifeboat-agent/fault-injection --test kill
	$(CARGO) test --workspace --test node_e2e -- --ignored
	$(CARGO) test --workspace --test node_disaster -- --ignored
	$(CARGO) test --workspace --test node_examples -- --ignored
	@echo "make demo (the README's main job; it fails when the backup or the drill fails)"
	@bash hack/demo.sh >target/demo.log 2>&1 || { tail -n 60 target/demo.log; exit 1; }
	@grep '^== Drill' target/demo.log

testenv-up: testenv ## Run a local control plane with the CRDs installed until Ctrl-C
	$(CARGO) run -q -p lifeboat-testenv --bin lifeboat-testenv -- up --kubeconfig target/testenv/kubeconfig

bench: bench-agent bench-operator ## Every benchmark in docs/performance.md (about 15 minutes)

bench-agent: deps ## The agent against pg_dump/pg_restore/psql on a ~1 GB database, directory and S3
	bash hack/bench/agent-postgres.sh

# The Go peer (controller-runtime) the operator is measured against; shared/ is read-only, so it
# is built into target/.
CR_BASELINE ?= ../shared/peers/cr-baseline

bench-operator: testenv ## The operator and its Go peer (cr-baseline), alternating, reconciling 1,000 and 10,000 BackupPolicies at once
	$(CARGO) build -q --release -p lifeboat-operator -p lifeboat-testenv --bin lifeboat-operator --bin bench-operator
	go build -C $(CR_BASELINE) -o "$(CURDIR)/target/cr-baseline" .
	./target/release/bench-operator --peer target/cr-baseline --policies 1000,10000 --runs 3

node: testenv ## Build (or reuse) the local node: containerd/runc/CNI/iptables (apt), kubelet, kube-scheduler, kube-proxy, CoreDNS, crictl, pause (needs root)
	bash hack/node/build.sh

node-images: ## Assemble the agent and operator images (OCI archives, no registry) into target/node-images/
	bash hack/node/images.sh

node-up: node node-images ## A control plane plus a real node that runs pods, until Ctrl-C (docs/node.md)
	mkdir -p target/node
	$(CARGO) run -q -p lifeboat-testenv --bin lifeboat-testenv -- up --node --images target/node-images --kubeconfig target/node/kubeconfig

e2e-node: deps node node-images ## End to end on the node: real agent pods, BackupPolicy, RestoreRequest, DrillSchedule, a lost cluster recovered, the examples as written
	$(CARGO) test --workspace --test node_e2e -- --ignored --nocapture
	$(CARGO) test --workspace --test node_disaster -- --ignored --nocapture
	$(CARGO) test --workspace --test node_examples -- --ignored --nocapture

bench-testenv: testenv ## Measure the control plane's warm start (spawn → CRDs Established)
	$(CARGO) run -q --release -p lifeboat-testenv --bin lifeboat-testenv -- bench --runs 10

demo: deps node node-images helm ## Lifeboat's main job: a local cluster with a node, PostgreSQL, Redis, S3; helm install; a backup and a drill; RPO and RTO (root)
	bash hack/demo.sh

demo-local: ## The same drill without a cluster or root: the agent alone, against local PostgreSQL and Redis
	bash hack/install-deps.sh >/dev/null
	$(CARGO) build -q -p lifeboat-agent
	./target/debug/lifeboat-agent drill --demo --dir ./backups

ci: ## What CI runs on a fresh clone
	bash .ci/run

clean-testenv: ## Remove the cached control-plane binaries (Go caches are kept)
	rm -rf target/testenv
