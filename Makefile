# archlab: `make run` trains, evaluates and exports every experiment; `make test` tests.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
# The installer: uv puts the pinned set into .venv in about 25 s where pip takes 90 s;
# --compile-bytecode as pip does, or every stage recompiles TensorFlow (PYTHONDONTWRITEBYTECODE).
UV := uv==0.13.9
# Stages run `python -m pipelines...` from dvc.yaml: put the venv first on PATH.
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
# No usage telemetry from MLflow (and no attempts to send it from offline machines).
export MLFLOW_DISABLE_TELEMETRY ?= true
MLFLOW_PORT ?= 5000

.PHONY: help venv data dag run test test-fast lint ui bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(UV)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c requirements.lock -e ".[test,bench]"
	touch $@

venv: $(VENV)/.installed ## create .venv with the pinned dependencies

data: venv ## fetch the embedded raw datasets into data/ (versioned by data.dvc)
	$(BIN)/python -m pipelines.fetch
	$(BIN)/dvc commit --force --quiet data.dvc

# Independent lanes of stages (each experiment, the study, the anomaly sweep) run side by side.
JOBS ?= 2

dag: venv ## write dvc.yaml from params.yaml and the code's imports (make run does it first)
	$(BIN)/python -m pipelines.dag

run: data ## run the whole pipeline: dvc repro, JOBS=2 lanes of stages side by side (JOBS=0: one at a time)
	$(BIN)/python -m pipelines.repro --jobs $(JOBS)
	@cat outputs/report/leaderboard.md

test: lint ## lint, then the test suite (what CI runs)
	$(BIN)/python -m pytest

test-fast: venv ## the test suite without the tests marked slow (end-to-end runs, training through the stages)
	$(BIN)/python -m pytest -m "not slow"

lint: venv ## ruff over the code and the tests; dvc.yaml is what `make dag` writes
	$(BIN)/ruff check .
	$(BIN)/python -m pipelines.dag --check

ui: venv ## the MLflow UI on http://127.0.0.1:5000 (MLFLOW_PORT=...) over the repo's store
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow/mlflow.db" --host 127.0.0.1 --port $(MLFLOW_PORT)

bench: venv ## benchmarks: ESN vs reservoirpy, Keras vs TFLite latency, no-op dvc repro (after `make run`)
	$(BIN)/python -m pipelines.bench

clean: ## remove pipeline outputs and the DVC run cache (keeps data/, .venv and mlflow/)
	rm -rf outputs .dvc/tmp
