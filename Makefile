SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

##@ Variables (override on the command line: make run SOURCE=file:PATH)
PYTHON ?= python3## Python that creates the virtualenv
VENV ?= .venv## Virtualenv folder
STORE ?= .hhpulse/store## Artifact store of run/serve: a folder or s3://bucket/prefix
SOURCE ?= demo## Where run collects: demo (hh.ru emulator), file:PATH (API dump), api (hh.ru)
PORT ?= 8080## HTTP port of serve
BENCH ?=## Benchmarks that bench runs, options after a name (e.g. BENCH="serving text", BENCH="scale --days 365"); all but scale by default
IMAGE_REGISTRY ?=## Registry prefix of the images (e.g. ghcr.io/you)
CONTAINER_TOOL ?= docker## docker or podman (docker is installed and started when absent; root)
BASE_IMAGE ?= hhpulse-base:bookworm## Base of both images; this default is built here with debootstrap (offline)
PIP_CA ?=## CA bundle for pip behind a TLS-intercepting proxy, a BuildKit secret (default: pip's cert or the system bundle; none)
PIP_CONF ?=## A pip.conf (index URL, credentials) for the image builds, a BuildKit secret
PYTEST_ARGS ?=## Extra pytest arguments (e.g. PYTEST_ARGS="-k serving")

BIN := $(VENV)/bin
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY_PREFIX := $(if $(IMAGE_REGISTRY),$(IMAGE_REGISTRY)/,)
PIPELINE_IMAGE := $(REGISTRY_PREFIX)hhpulse-pipeline:$(VERSION)
SERVING_IMAGE := $(REGISTRY_PREFIX)hhpulse-serving:$(VERSION)
STAMP := $(VENV)/.installed
# KServe's storage initializer (kserve-storage, the version of kserve) for make e2e: its own venv,
# as on the cluster it is its own container (it brings the GCS, Azure and Hugging Face clients)
KSERVE_VERSION := $(shell sed -n 's/.*"kserve==\([^"]*\)".*/\1/p' pyproject.toml)
STORAGE_VENV := .hhpulse/storage-venv

##@ Help
.PHONY: help
help: ## Show this help
	@awk 'BEGIN {printf "Usage: make \033[36m<target>\033[0m [VAR=value]\n"} \
	  /^[A-Z_]+ \?=.*##/ { split($$0, a, "##"); split(a[1], v, "[ ]*[?]=[ ]*"); sub(/^ +/, "", a[2]); \
	    printf "  \033[36m%-14s\033[0m %s [%s]\n", v[1], a[2], v[2] } \
	  /^[a-zA-Z0-9_-]+:.*##/ { split($$0, a, ":.*## "); split($$0, t, ":"); \
	    printf "  \033[36m%-14s\033[0m %s\n", t[1], a[2] } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Setup
# setuptools says "Editable installation ... be careful with folders ... with the same name as
# your package" on every editable install of a package-dir layout like this one (src/hhpulse,
# components/, pipelines/): information, not a problem, that pip shows as a BuildBackendWarning
QUIET_BUILD := PYTHONWARNINGS='ignore:Editable installation'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	$(QUIET_BUILD) $(BIN)/pip install -q -e '.[cpu,pipeline,serve,dev]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install hhpulse with every extra (idempotent)

##@ Quick start
.PHONY: run
run: install ## Run the whole pipeline locally with kfp.local (SOURCE=demo|file:PATH|api, STORE=DIR)
	$(BIN)/hhpulse run --source '$(SOURCE)' --store '$(STORE)'

.PHONY: serve
serve: install ## Serve the store's champion on http://127.0.0.1:PORT, logging each prediction to the store
	$(BIN)/hhpulse serve --store '$(STORE)' --http-port '$(PORT)'

.PHONY: monitor
monitor: install ## What serve answered against the champion: volume, cohort mix, drift (looks only, changes nothing)
	$(BIN)/hhpulse monitor --store '$(STORE)'

.PHONY: test
test: install ## Run the test suite
	TMPDIR=$${TMPDIR:-/tmp} $(BIN)/pytest $(PYTEST_ARGS)

##@ Development
# the version comes from the browser itself: Debian's /usr/bin/chromium wrapper script prints
# "[: unexpected operator" in containers (its /etc/chromium.d/dev-shm test of findmnt's output)
.PHONY: browser
browser: ## Install headless Chromium (Debian/Ubuntu apt, root) for the report's screenshot test
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@if [ -x /usr/lib/chromium/chromium ]; then /usr/lib/chromium/chromium --version; else chromium --version; fi

.PHONY: lint
lint: install ## Lint with ruff, and check the import contracts (stages import one way, no cycles)
	$(BIN)/ruff check src tests components pipelines benchmarks
	$(BIN)/ruff format --check src tests components pipelines benchmarks
	$(BIN)/lint-imports

.PHONY: fmt
fmt: install ## Format and fix with ruff
	$(BIN)/ruff format src tests components pipelines benchmarks
	$(BIN)/ruff check --fix src tests components pipelines benchmarks

.PHONY: newcomer
newcomer: install ## A new user's session, scripted and checked: run twice, the real dump, serve, 30 requests, monitor (long)
	$(BIN)/python tests/newcomer.py

.PHONY: bench
bench: install ## Run the benchmarks, with ratios against in-run baselines (real data from ../shared)
	$(BIN)/python -m benchmarks $(BENCH)

.PHONY: compile
compile: install ## Compile the Kubeflow pipeline to pipelines/hhpulse.yaml
	$(BIN)/hhpulse compile --output pipelines/hhpulse.yaml

##@ Images
.PHONY: engine
engine: ## Make sure a container engine runs (installs docker.io and starts dockerd when absent; root)
	@bash images/engine.sh '$(CONTAINER_TOOL)' >/dev/null

.PHONY: base
base: ## Build the local base image BASE_IMAGE with debootstrap when absent (no registry needed)
	client="$$(bash images/engine.sh '$(CONTAINER_TOOL)')"; bash images/base.sh "$$client" '$(BASE_IMAGE)'

.PHONY: images
images: ## Build the pipeline and serving images for real and print their sizes (builds the base first)
	CONTAINER_TOOL='$(CONTAINER_TOOL)' BASE_IMAGE='$(BASE_IMAGE)' PIP_CA='$(PIP_CA)' PIP_CONF='$(PIP_CONF)' \
	  bash images/build.sh '$(PIPELINE_IMAGE)' '$(SERVING_IMAGE)'

$(STORAGE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(STORAGE_VENV)
	$(STORAGE_VENV)/bin/pip install -q 'kserve-storage==$(KSERVE_VERSION)'
	touch $@

.PHONY: e2e
e2e: install images $(STORAGE_VENV)/.installed ## The compiled pipeline in containers over S3 (moto), KServe's storage initializer, the serving image checked against host predict
	client="$$(bash images/engine.sh '$(CONTAINER_TOOL)')"; \
	TMPDIR=$${TMPDIR:-/tmp} $(BIN)/python -m pipelines.e2e --engine "$$client" \
	  --pipeline-image '$(PIPELINE_IMAGE)' --serving-image '$(SERVING_IMAGE)' \
	  --storage-python $(STORAGE_VENV)/bin/python

.PHONY: push
push: ## Push both images to IMAGE_REGISTRY
	@test -n "$(IMAGE_REGISTRY)" || { echo "set IMAGE_REGISTRY, e.g. make push IMAGE_REGISTRY=registry.example.com/ml"; exit 2; }
	$(CONTAINER_TOOL) push $(PIPELINE_IMAGE)
	$(CONTAINER_TOOL) push $(SERVING_IMAGE)

##@ Clean up
.PHONY: clean
clean: ## Remove the virtualenv, caches, build outputs and kfp.local's workspaces; keeps your stores in .hhpulse
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info .hhpulse/kfp-local $(STORAGE_VENV)

.PHONY: clean-stores
clean-stores: ## Remove .hhpulse with every local store in it (runs, history, models): your data, gone
	rm -rf .hhpulse
