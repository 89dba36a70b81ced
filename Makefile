# The front door. `make run` starts the whole platform locally; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Debian's python3.11 is built with PGO/LTO and is markedly faster; any 3.11 works.
PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || echo 3.11)
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
PROTO_FILES := $(shell find protos -name '*.proto')
CONTRACTS := libs/contracts/src
STAMP := $(CONTRACTS)/loyalty/.generated

.PHONY: help setup protos run test lint format bench service images chart clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.tools/bin/uv:
	python3 -m venv .tools && .tools/bin/pip install --quiet uv==0.13.8

# --all-packages: every workspace member (libs/*, services/*) without a line per service anywhere.
$(VENV)/.synced: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	@touch $@

setup: $(VENV)/.synced $(STAMP) $(VENV)/bin/helm  ## create the environment and generate the contracts

$(VENV)/bin/helm: $(VENV)/.synced
	$(PY) scripts/install_helm.py

$(STAMP): $(PROTO_FILES) $(VENV)/.synced
	rm -rf $(CONTRACTS)/loyalty && mkdir -p $(CONTRACTS)
	$(PY) -m grpc_tools.protoc -I protos --python_out=$(CONTRACTS) --pyi_out=$(CONTRACTS) \
		--grpc_python_out=$(CONTRACTS) $(PROTO_FILES)
	find $(CONTRACTS)/loyalty -type d -exec touch {}/__init__.py \;
	@touch $@

protos: $(STAMP)  ## generate Python code from protos/ into libs/contracts (git-ignored)

run: setup  ## start PostgreSQL, Redis and every service of the catalogue; Ctrl-C stops everything
	$(PY) -m loyalty_devstack run

test: setup  ## run the whole test suite against real PostgreSQL and Redis
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: setup  ## buf lint, buf breaking against the latest release tag, ruff
	$(VENV)/bin/buf lint
	bash scripts/buf-breaking
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup  ## run the benchmarks under bench/ (or BENCH=bench/ledger/bench_ledger.py); prints figures
	$(PY) -m loyalty_devstack bench $(BENCH)

service: $(VENV)/.synced  ## add a service: make service NAME=giftcards [DESCRIPTION="what it does"]
	@test -n "$(NAME)" || { echo "usage: make service NAME=<name> [DESCRIPTION=\"what it does\"]"; exit 2; }
	$(PY) -m loyalty_devstack new-service "$(NAME)" --description "$(DESCRIPTION)"
	$(UV) lock
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	@touch $(VENV)/.synced

images: $(VENV)/.synced  ## build one image per service of the catalogue (needs a Docker engine)
	set -e; for s in $$($(PY) -m loyalty_devstack services); do \
		docker build -f docker/Dockerfile --build-arg SERVICE=$$s -t loyalty-$$s:dev . ; done

chart: setup  ## lint and render the Helm chart (with the CI values: the chart needs database and Redis URLs)
	$(VENV)/bin/helm lint --strict deploy/helm/loyalty -f deploy/helm/loyalty/ci/test-values.yaml
	$(VENV)/bin/helm template loyalty deploy/helm/loyalty -f deploy/helm/loyalty/ci/test-values.yaml > /dev/null

clean:  ## remove generated code and the environment (keeps .data/)
	rm -rf $(VENV) $(CONTRACTS)/loyalty .tools
