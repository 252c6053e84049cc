# archlab: `make run` trains, evaluates and exports every experiment; `make test` tests.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
# TensorFlow's build (pipelines/venv.py): GPU=auto takes tensorflow[and-cuda]
# (requirements-cuda.lock) where nvidia-smi lists an NVIDIA GPU, else tensorflow-cpu
# (requirements.lock), and keeps the build an existing .venv has; GPU=1 insists on CUDA and
# stops at once where no GPU answers; GPU=0 takes the CPU build anywhere. Another build
# replaces .venv: never both in one environment.
GPU ?= auto
# Stages run `python -m pipelines...` from dvc.yaml: put the venv first on PATH.
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
# No usage telemetry from MLflow (and no attempts to send it from offline machines).
export MLFLOW_DISABLE_TELEMETRY ?= true
MLFLOW_PORT ?= 5000

.PHONY: help venv lock gpu-check data dag run test test-fast test-ui lint ui server server-stop sync compare push pull bench numerics clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: ## create .venv with the pinned dependencies and the TensorFlow build for this machine (GPU=auto|1|0)
	@$(PYTHON) -m pipelines.venv --gpu $(GPU)

lock: venv ## re-resolve requirements.lock and requirements-cuda.lock from pyproject.toml (needs PyPI)
	$(BIN)/python -m pipelines.venv --lock

gpu-check: venv ## CNN and LSTM training throughput under float32, mixed_bfloat16 and XLA (KERAS_BACKEND, default jax)
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(BIN)/python -m pipelines.gpu_check

data: venv ## fetch the embedded raw datasets into data/ (versioned by data.dvc)
	$(BIN)/python -m pipelines.fetch
	$(BIN)/dvc commit --force --quiet data.dvc

# Independent lanes of stages (each experiment, the study, the anomaly sweep) run side by side:
# three on two cores, so that a lane waiting for DVC's lock or in a single-threaded step
# (importing TensorFlow, a TFLite conversion) leaves its core to another.
JOBS ?= 3

dag: venv ## write dvc.yaml from params.yaml and the code's imports (make run does it first)
	$(BIN)/python -m pipelines.dag

run: data ## run the whole pipeline: dvc repro, JOBS=3 lanes of stages side by side (JOBS=0: one at a time)
	$(BIN)/python -m pipelines.repro --jobs $(JOBS)
	@cat outputs/report/leaderboard.md

# Two pytest workers (pytest-xdist), each test module on one of them: the end-to-end module on
# one worker while the rest run on the other. The UI tests need Chromium: `make test-ui`.
PYTEST_WORKERS ?= 2
test: lint ## lint, then the test suite (what CI runs), in two workers
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not ui"

test-fast: venv ## the test suite without the tests marked slow (end-to-end runs, training through the stages)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow and not ui"

test-ui: venv ## the MLflow UI in headless Chromium (Debian's chromium); ARCHLAB_SCREENSHOTS=dir keeps the screenshots
	$(BIN)/python -m pytest -m ui

lint: venv ## ruff over the code and the tests; dvc.yaml is what `make dag` writes
	$(BIN)/ruff check .
	$(BIN)/python -m pipelines.dag --check

ui: venv ## the MLflow UI on http://127.0.0.1:5000 (MLFLOW_PORT=...) over the repo's store, with a link per experiment
	@MLFLOW_TRACKING_URI="sqlite:///$(CURDIR)/mlflow/mlflow.db" $(BIN)/python -m pipelines.tracking links "http://127.0.0.1:$(MLFLOW_PORT)"
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow/mlflow.db" --host 127.0.0.1 --port $(MLFLOW_PORT)

# A shared tracking server: PostgreSQL (a cluster of its own under mlflow/server) and
# `mlflow server` with proxied artifacts. HOST=0.0.0.0 needs ALLOW_REMOTE=1 (and ALLOWED_HOSTS=
# the name clients use, else MLflow answers 403 to it); AUTH=1 turns on
# MLflow's basic-auth app with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD as admin.
HOST ?= 127.0.0.1
server: venv ## start the shared MLflow tracking server on PostgreSQL (HOST=, MLFLOW_PORT=, AUTH=1, ALLOW_REMOTE=1)
	$(BIN)/python -m pipelines.server start --host $(HOST) --port $(MLFLOW_PORT) $(if $(filter 1,$(AUTH)),--auth) $(if $(filter 1,$(ALLOW_REMOTE)),--allow-remote) $(if $(ALLOWED_HOSTS),--allowed-hosts $(ALLOWED_HOSTS))

server-stop: venv ## stop the tracking server and its PostgreSQL
	$(BIN)/python -m pipelines.server stop

sync: venv ## upload this machine's local MLflow runs to a server (TO=http://host:5000); a second sync adds nothing
	@test -n "$(TO)" || { echo "error: name the server: make sync TO=http://host:5000" >&2; exit 1; }
	$(BIN)/python -m pipelines.sync --to "$(TO)"

REF ?=
compare: venv ## machines side by side from the MLflow runs (REF=<machine_id or host>; default: the machine with the most runs)
	$(BIN)/python -m pipelines.compare $(if $(REF),--reference $(REF))
	@cat outputs/compare/machines.md

push: venv ## send data, models and DVC's run cache to the remote ARCHLAB_REMOTE (a folder or ssh:// URL)
	$(BIN)/python -m pipelines.remote push

pull: venv ## fetch them from ARCHLAB_REMOTE: up to date without training
	$(BIN)/python -m pipelines.remote pull

bench: venv ## benchmarks (after `make run`): ESN vs reservoirpy, Keras vs TFLite latency, no-op dvc repro, train stage vs bare Keras, XLA/bf16/JAX ratios
	$(BIN)/python -m pipelines.bench

numerics: venv ## which kernel settings (oneDNN ISA, oneDNN off, threads) change trained weights on this machine
	$(BIN)/python -m pipelines.numerics

clean: ## remove pipeline outputs and the DVC run cache (keeps data/, .venv and mlflow/)
	rm -rf outputs .dvc/tmp
