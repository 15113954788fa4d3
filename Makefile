# The project's entry points. `make run` and `make test` work on a fresh machine: they install
# what they need (a virtualenv, Debian packages, Go builds into ~/.cache/srvthreds).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install tools lint fmt typecheck test test-unit test-integration run run-engine \
        crds golden schema docs bench cluster-up cluster-status cluster-down chart-lint manifests clean \
        services

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v openssl >/dev/null || (apt-get update -qq && apt-get install -y -qq openssl)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/pip install --quiet -e '.[operator,engine]' --group dev
	touch $@

install: $(STAMP) ## Create .venv with the project and its dev tools

tools: ## Build the control-plane binaries into ~/.cache/srvthreds (no-op when cached)
	hack/build-tools.sh kube etcd kwok helm

fmt: $(STAMP) ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: $(STAMP) ## ruff, ruff format --check, mypy --strict, import-linter, CRD drift
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test-unit: $(STAMP) ## Fast unit tests (no servers)
	$(BIN)/pytest

services: ## Install Redis, RabbitMQ (Debian) and build FerretDB for the backend tests (no-op when done)
	hack/install-services.sh

test-integration: $(STAMP) tools services ## Integration and backend tests against real servers
	$(BIN)/pytest -m "integration or backends or agents" -p no:randomly

test: lint test-unit test-integration ## Everything: lint, unit and integration tests

crds: $(STAMP) ## Regenerate crds/, the chart's and manifests' copies, and the CRD reference doc
	$(BIN)/srvthreds-operator crds --output crds/
	$(BIN)/srvthreds-operator reference-doc --output docs/operator/crd-reference.md
	hack/sync-crds.sh

schema: $(STAMP) ## Regenerate engine/schemas/pattern.schema.json
	$(BIN)/srvthreds-engine schema --output engine/schemas/pattern.schema.json

golden: $(STAMP) ## Regenerate the operator's golden renders of the samples
	for s in minimal production external-brokers; do \
	  $(BIN)/srvthreds-operator render -f manifests/samples/$$s.yaml > tests/srvthreds_operator/golden/$$s.yaml; \
	done

cluster-up: $(STAMP) tools ## Start the local control plane (kubeconfig: .cluster/kubeconfig)
	$(BIN)/python -m tests.localcluster up

cluster-status: $(STAMP) ## Show the local control plane's processes and health
	$(BIN)/python -m tests.localcluster status

cluster-down: $(STAMP) ## Stop the local control plane
	$(BIN)/python -m tests.localcluster down

run: $(STAMP) tools ## Local control plane + CRDs + operator + the minimal sample, until Ctrl-C
	$(BIN)/python -m tests.localcluster run-demo

run-engine: $(STAMP) ## The engine in embedded single-process mode with the demo profile
	$(BIN)/srvthreds-engine run --profile engine/profiles/demo

bench: $(STAMP) tools ## Benchmarks; figures written to BENCHMARKS.md
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .cluster

chart-lint: $(STAMP) tools ## helm lint + helm template of the operator chart
	$(BIN)/pytest tests/delivery/test_chart.py -m integration

manifests: $(STAMP) ## Render the kustomize base
	$(BIN)/kubectl kustomize manifests/base
