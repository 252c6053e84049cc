"""Shared fixtures: tiny data, a scratch outputs tree and MLflow store per test session.

Every stage runs on scikit-learn's digits (1,797 8x8 images) with one or two epochs,
so the whole suite exercises every path in minutes on two cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest  # noqa: E402

from pipelines import config, datasets, fetch, paths  # noqa: E402

TINY_EXPERIMENTS = {
    "mlp": {
        "architecture": "mlp", "dataset": "digits", "seed": 7,
        "hyperparameters": {"hidden_units": [32], "dropout_rate": 0.1},
        "training": {"epochs": 4, "batch_size": 64, "learning_rate": 0.01,
                     "early_stopping_patience": 2},
        "export": {"latency_runs": 5, "representative_examples": 50},
    },
    "cnn": {
        "architecture": "cnn", "dataset": "digits", "seed": 7,
        "hyperparameters": {"filters": [8], "dense_units": [16], "dropout_rate": 0.1},
        "training": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01},
        "export": {"latency_runs": 5, "representative_examples": 50},
    },
}


def tiny_params(**overrides) -> dict:
    """A params document for digits; `overrides` replace whole experiments."""
    import copy

    experiments = copy.deepcopy(TINY_EXPERIMENTS)
    experiments.update(overrides)
    return {"datasets": ["digits"], "experiments": experiments}


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    fetch.fetch_digits(root / "digits")
    return root


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory, raw_dir):
    root = tmp_path_factory.mktemp("tfds")
    datasets.prepare("digits", data_dir=root, raw_dir=raw_dir)
    return root


@pytest.fixture
def workspace(tmp_path, tfds_dir, monkeypatch):
    """Point the stages at a scratch outputs tree and MLflow store, with digits prepared."""
    monkeypatch.setattr(paths, "TFDS_DIR", tfds_dir)
    monkeypatch.setattr(paths, "EXPERIMENTS", tmp_path / "experiments")
    monkeypatch.setattr(paths, "REPORT", tmp_path / "report")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # with a user-set tracking URI MLflow puts artifacts in ./mlruns: keep them in tmp_path
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def params() -> config.Params:
    return config.validate(tiny_params())
