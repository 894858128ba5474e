# coldchain: `make help` lists the targets. Every target sets up what it needs (host venv from
# requirements-host.lock, a Docker daemon, base image, wheelhouse) on the way.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
COLDCHAIN := $(VENV)/bin/python -m coldchain
PYTEST_ARGS ?=
OUT ?= out
DEVICE ?= cpu
DATA_ARGS ?=
TRAIN_ARGS ?=
FREEZE_ARGS ?=
INFER_ARGS ?=
DRIFT_ARGS ?=
DOCTOR_ARGS ?=
ADOPT_ARGS ?=
REEXPORT_ARGS ?=
MODEL ?=
CHECKPOINT ?=
RUNTIME ?= openvino
# Signing (README, "Signed models"): freeze/adopt/reexport sign with SIGN_KEY; infer/doctor/drift-test
# refuse a model that does not verify against TRUST (public keys or certificates, comma-separated).
SIGN_KEY ?=
TRUST ?=
ifneq ($(SIGN_KEY),)
export COLDCHAIN_SIGN_KEY := $(abspath $(SIGN_KEY))
endif
ifneq ($(TRUST),)
export COLDCHAIN_TRUST := $(TRUST)
endif
# Two `make` runs on one $(OUT) take turns step by step (flock, released when a run dies): a step's
# input (out/run under freeze) is never swapped and removed under it by the other run's step.
STEP = mkdir -p $(OUT) && flock $(OUT)/.steps.lock $(COLDCHAIN) $(1) --device $(DEVICE)

# A mistyped variable (make train TRIAN_ARGS=...) would be silently ignored; refuse it instead.
KNOWN_VARS := PYTHON OUT DEVICE DATA_ARGS TRAIN_ARGS FREEZE_ARGS INFER_ARGS DRIFT_ARGS DOCTOR_ARGS ADOPT_ARGS \
	REEXPORT_ARGS MODEL CHECKPOINT CALIBRATION PYTEST_ARGS BENCH_ARGS SHARD SHARDS PARTIALS RUNTIME ARCHIVE REGISTRY INDEX \
	SIGN_KEY TRUST ROUNDS PROFILE
UNKNOWN_VARS := $(foreach var,$(.VARIABLES),$(if $(filter command line,$(origin $(var))),$(filter-out $(KNOWN_VARS),$(var))))
ifneq ($(strip $(UNKNOWN_VARS)),)
$(error $(shell python3 scripts/nearest-make-var.py $(UNKNOWN_VARS) -- $(KNOWN_VARS)))
endif

.PHONY: help venv docker lock lock-check base base-arm64 wheels images images-cuda data train finetune freeze infer adopt reexport convert quantize \
	drift-test drift-plan drift-merge images-save images-load images-push images-pull doctor test test-unit faults bench \
	prune clean clean-all

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

base-arm64: venv docker ## The arm64 base (debootstrap, second stage under qemu); sets up the emulation it needs where missing (as root)
	$(COLDCHAIN) base --suite bookworm-arm64

wheels: venv lock-check ## Fetch the wheels the image locks pin and verify their hashes
	$(COLDCHAIN) wheels

images: venv docker lock-check ## Build the CPU train and infer images
	$(COLDCHAIN) images --device cpu

images-cuda: venv docker lock-check ## Build the CUDA train and infer images (CUDA/cuDNN checked at build)
	$(COLDCHAIN) images --device cuda

data: $(OUT)/data/labels.txt ## Generate the default dataset into out/data (DATA_ARGS="--seed 1 ...")

$(OUT)/data/labels.txt: | venv docker lock-check
	$(call STEP,data) --out $(OUT)/data $(DATA_ARGS)

train: $(OUT)/run/metrics.json ## Train ResNet v1 50 on out/data in the training container (TRAIN_ARGS=...)

$(OUT)/run/metrics.json: $(OUT)/data/labels.txt | venv docker lock-check
	$(call STEP,train) --data $(OUT)/data --out $(OUT)/run $(TRAIN_ARGS)

finetune: venv docker lock-check ## Fine-tune from CHECKPOINT=path (file prefix or directory) into out/run
	@test -n "$(CHECKPOINT)" || { echo "make finetune: set CHECKPOINT=path/to/resnet_v1_50.ckpt (a checkpoint prefix or directory)" >&2; exit 2; }
	$(MAKE) --no-print-directory $(OUT)/data/labels.txt
	$(call STEP,train) --data $(OUT)/data --out $(OUT)/run --checkpoint-path "$(CHECKPOINT)" $(TRAIN_ARGS)

freeze: $(OUT)/model/manifest.json ## Freeze out/run into out/model (model.pb, manifest.json, golden.npz)

$(OUT)/model/manifest.json: $(OUT)/run/metrics.json | venv docker lock-check
	$(call STEP,freeze) --run $(OUT)/run --out $(OUT)/model $(FREEZE_ARGS)

infer: $(OUT)/predictions.jsonl ## The whole chain: data, train, freeze, then infer on the held-out images

$(OUT)/predictions.jsonl: $(OUT)/model/manifest.json | venv docker lock-check
	$(call STEP,infer) --model $(OUT)/model --input $(OUT)/data/val --output $@ $(INFER_ARGS)

# With MODEL=DIR (an adopted model) these targets need only the images, not the kit's own chain.
MODEL_OR_CHAIN = $(if $(MODEL),,$(OUT)/model/manifest.json)

adopt: venv docker lock-check ## Adopt a frozen graph made elsewhere: MODEL=path/to/frozen.pb [ADOPT_ARGS=--labels FILE ...] -> out/adopted
	@test -n "$(MODEL)" || { echo "make adopt: set MODEL=path/to/frozen_graph.pb (ADOPT_ARGS: --labels, --preprocessing, --images, --requirements ...)" >&2; exit 2; }
	$(COLDCHAIN) adopt "$(MODEL)" --out $(OUT)/adopted $(ADOPT_ARGS)

convert: $(MODEL_OR_CHAIN) | venv docker lock-check ## Convert MODEL (default out/model) for RUNTIME=openvino|onnxruntime (or openvino-int8, onnxruntime-int8, tflite-...) -> MODEL/converted/RUNTIME
	$(COLDCHAIN) convert --runtime $(RUNTIME) $(or $(MODEL),$(OUT)/model)

TFLITE_TARGETS := tflite-fp32 tflite-fp16 tflite-dynamic tflite-int8
INT8_TARGETS := openvino-int8 onnxruntime-int8
CALIBRATION ?=

quantize: $(MODEL_OR_CHAIN) | venv docker lock-check ## TFLite fp32/fp16/dynamic/int8, OpenVINO and ONNX Runtime int8 of MODEL (default out/model), in one container; int8 calibrated on CALIBRATION=DIR (default out/data/train)
	$(COLDCHAIN) convert $(foreach target,$(TFLITE_TARGETS) $(INT8_TARGETS),--target $(target)) \
		$(if $(or $(CALIBRATION),$(MODEL)),$(if $(CALIBRATION),--calibration-images "$(CALIBRATION)"),--calibration-images $(OUT)/data/train) \
		$(or $(MODEL),$(OUT)/model)

reexport: venv docker lock-check ## Re-export MODEL with a fix: REEXPORT_ARGS="--clear-devices" (or --strip-default-attrs) -> out/reexported
	@test -n "$(MODEL)" || { echo "make reexport: set MODEL=path/to/model (REEXPORT_ARGS=--clear-devices)" >&2; exit 2; }
	$(COLDCHAIN) reexport "$(MODEL)" --out $(OUT)/reexported $(REEXPORT_ARGS)

# PROFILE=arm64: drift/matrix-arm64.toml, the cases run under qemu emulation on x86-64 (README, "An edge device: arm64").
DRIFT_MATRIX = $(if $(PROFILE),--matrix drift/matrix-$(PROFILE).toml)

drift-test: $(MODEL_OR_CHAIN) | venv docker lock-check ## Run the model (MODEL=DIR, default out/model) in every drift/matrix.toml environment (SHARD=I/N: one shard; PROFILE=arm64: drift/matrix-arm64.toml; DRIFT_ARGS=...)
	$(COLDCHAIN) drift-test --model $(or $(MODEL),$(OUT)/model) $(if $(MODEL),,--run $(OUT)/run) \
		--out $(OUT)/drift$(if $(PROFILE),-$(PROFILE)) $(DRIFT_MATRIX) $(if $(SHARD),--shard $(SHARD)) $(DRIFT_ARGS)

drift-plan: venv ## Print how SHARDS=N shards split the drift matrix, as JSON for a CI job matrix
	@$(COLDCHAIN) drift-plan -q --shards $(or $(SHARDS),2) $(if $(MODEL),--model "$(MODEL)")

drift-merge: venv docker ## Merge the shards' reports (PARTIALS=files or dirs, default out/drift) into out/drift
	$(COLDCHAIN) drift-merge $(or $(PARTIALS),$(OUT)/drift) --out $(OUT)/drift

TRANSFER_ARGS = --model $(or $(MODEL),$(OUT)/model) $(if $(SHARD),--shard $(SHARD))

images-save: venv docker lock-check ## Save the images drift-test needs (SHARD=I/N: that shard's) to ARCHIVE (default out/images.tar)
	$(COLDCHAIN) images-save --out $(or $(ARCHIVE),$(OUT)/images.tar) $(TRANSFER_ARGS)

images-load: venv docker lock-check ## Load ARCHIVE and check its images against this checkout's inputs (SHARD=I/N)
	$(COLDCHAIN) images-load $(or $(ARCHIVE),$(OUT)/images.tar) $(TRANSFER_ARGS)

images-push: venv docker lock-check ## Push the images drift-test needs to REGISTRY (host:port), their digests to INDEX (default out/images.json)
	@test -n "$(REGISTRY)" || { echo "make images-push: set REGISTRY=host:port[/path]" >&2; exit 2; }
	$(COLDCHAIN) images-push "$(REGISTRY)" --index $(or $(INDEX),$(OUT)/images.json) $(TRANSFER_ARGS)

images-pull: venv docker lock-check ## Pull by digest the images INDEX lists (default out/images.json) and check them (SHARD=I/N)
	$(COLDCHAIN) images-pull $(or $(INDEX),$(OUT)/images.json) $(TRANSFER_ARGS)

doctor: $(MODEL_OR_CHAIN) | venv docker lock-check ## Diagnose MODEL (default out/model) for the inference runtime (DOCTOR_ARGS=--env NAME)
	$(COLDCHAIN) doctor "$(or $(MODEL),$(OUT)/model)" $(DOCTOR_ARGS)

test: venv docker lock-check ## All tests, the Docker ones included (they build and run real images)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-unit: venv ## Unit tests only (no Docker daemon needed)
	$(VENV)/bin/python -m pytest -m "not docker" $(PYTEST_ARGS)

faults: venv docker lock-check ## Fault suite, ROUNDS=10 concurrent freeze pairs (CI: 3), 3 concurrent make infer from fresh clones -> bench/faults.json
	$(VENV)/bin/python scripts/faults.py --rounds $(or $(ROUNDS),10)

bench: $(OUT)/model/manifest.json | venv docker lock-check ## Inference speed, image costs, adopt, reproducibility across CPU classes -> bench/results.json (BENCH_ARGS=--quick)
	$(COLDCHAIN) bench --run $(OUT)/run $(BENCH_ARGS)

prune: venv docker ## Remove the kit's images this checkout no longer uses: superseded, built from other inputs, or left by killed test sessions
	$(COLDCHAIN) clean --superseded

clean: ## Remove the kit's containers, images and build leftovers (found by label)
	@if [ -x $(VENV)/bin/python ] && docker version >/dev/null 2>&1; then $(COLDCHAIN) clean; fi
	rm -rf build

clean-all: clean ## Also remove base images, the wheelhouse and the host venv
	@if [ -x $(VENV)/bin/python ] && docker version >/dev/null 2>&1; then $(COLDCHAIN) clean --all; fi
	rm -rf wheelhouse $(VENV)
