# coldchain: `make help` lists the targets. Every target sets up what it needs (host venv from
# requirements-host.lock, a Docker daemon, base image, wheelhouse) on the way.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
COLDCHAIN := $(VENV)/bin/python -m coldchain
PYTEST_ARGS ?=

.PHONY: help venv docker lock lock-check base wheels images images-cuda test test-unit test-docker bench clean clean-all

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Host virtualenv, installed from requirements-host.lock with hashes

$(VENV)/.installed: requirements-host.lock
	@scripts/bootstrap-venv.sh "$(PYTHON)" "$(VENV)" requirements-host.lock
	@touch $@

docker: ## Make sure a Docker daemon answers (installs/starts one as root on Debian)
	@scripts/ensure-docker.sh

lock: venv ## Re-resolve every requirements*.in into its hashed lock
	$(COLDCHAIN) lock

lock-check: venv ## Fail, naming the file, if a lock is stale or the locks disagree
	$(COLDCHAIN) lock-check

base: venv docker ## The base image: official python slim if a registry answers, else debootstrap
	$(COLDCHAIN) base

wheels: venv lock-check ## Fetch the wheels the image locks pin and verify their hashes
	$(COLDCHAIN) wheels

images: venv docker lock-check ## Build the CPU train and infer images
	$(COLDCHAIN) images --device cpu

images-cuda: venv docker lock-check ## Build the CUDA train and infer images (CUDA/cuDNN checked at build)
	$(COLDCHAIN) images --device cuda

test: venv docker lock-check ## All tests, the Docker ones included (they build and run real images)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-unit: venv ## Unit tests only (no Docker daemon needed)
	$(VENV)/bin/python -m pytest -m "not docker" $(PYTEST_ARGS)

bench: venv docker lock-check ## Measure image build times and sizes; writes bench/results.json
	$(VENV)/bin/python -m coldchain bench

clean: ## Remove the kit's containers, images and build leftovers (found by label)
	@if [ -x $(VENV)/bin/python ] && docker version >/dev/null 2>&1; then $(COLDCHAIN) clean; fi
	rm -rf build

clean-all: clean ## Also remove base images, the wheelhouse and the host venv
	@if [ -x $(VENV)/bin/python ] && docker version >/dev/null 2>&1; then $(COLDCHAIN) clean --all; fi
	rm -rf wheelhouse $(VENV)
