"""Shared fixtures: tiny data, a scratch outputs tree and MLflow store per test session.

Every stage runs on scikit-learn's digits (1,797 8x8 images) with one or two epochs,
so the whole suite exercises every path in minutes on two cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")   # a sample even of a tiny training

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
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


# The long-term dependency study in miniature: 4 runs of 3 updates.
TINY_STUDY = {
    "cells": ["gru"], "lengths": [4, 6], "clipnorm": [None, 1.0], "seed": 5,
    "hyperparameters": {"units": 4, "masking": False},
    "training": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 16, "learning_rate": 0.01,
                 "early_stopping_patience": 0},
}


# One tiny experiment of every registered architecture, on the datasets `every_dataset`
# prepares: what the backend and precision tests train (a few steps each).
_FEW = {"epochs": 1, "steps_per_epoch": 3, "batch_size": 16, "learning_rate": 0.01, "early_stopping_patience": 0}
_FLOAT32_ONLY = {"variants": ["float32"], "latency_runs": 2, "parity_examples": 20, "representative_examples": 10}
EVERY_ARCHITECTURE = {
    "mlp": ("digits", {"hidden_units": [16]}),
    "cnn": ("digits", {"filters": [4], "dense_units": [8]}),
    **{cell: ("japanese_vowels", {"units": 4}) for cell in
       ("simple_rnn", "lstm", "gru", "bi_simple_rnn", "bi_lstm", "bi_gru")},
    "esn": ("mackey_glass", {"units": 20, "masking": False}),
    "seq2seq": ("addition", {"units": 8, "embedding_dim": 4}),
    "rnn_lm": ("fortunes", {"cell": "gru", "units": 8, "embedding_dim": 4}),
    "autoencoder": ("digits", {"code_size": 4}),
    "deep_autoencoder": ("digits", {"code_size": 4, "hidden_units": [8]}),
    "denoising_autoencoder": ("digits", {"code_size": 4, "hidden_units": [8]}),
    "conv_autoencoder": ("digits", {"code_size": 4, "filters": [4]}),
    "vae": ("digits", {"code_size": 2, "hidden_units": [8]}),
    "recursive_net": ("listops", {"units": 4, "embedding_dim": 4, "iterations": 9}),
    "tree_lstm": ("listops", {"units": 4, "embedding_dim": 4, "iterations": 9}),
}


def every_architecture(**training) -> dict:
    """A params document with `EVERY_ARCHITECTURE`, each with `training` added to its settings
    (the ESN, fitted in closed form, takes only the settings every architecture takes)."""
    experiments = {}
    for name, (dataset, hyperparameters) in EVERY_ARCHITECTURE.items():
        few = {"batch_size": 64} if name == "esn" else _FEW
        shared = {k: v for k, v in training.items() if name != "esn" or k in config.FITTING}
        experiments[name] = {"architecture": name, "dataset": dataset, "seed": 4, "hyperparameters": hyperparameters,
                             "training": {**few, **shared}, "export": _FLOAT32_ONLY}
    return {"datasets": sorted({d for d, _ in EVERY_ARCHITECTURE.values()}), "experiments": experiments}


def prepare_small_listops(data_dir, train: int = 300, test: int = 60, deep: int = 40) -> None:
    """ListOps d5 with `train` / `test` / `deep` trees in `data_dir` (`prepare@listops`)."""
    from pipelines.datasets.listops import ArchlabListops, DepthConfig

    configs = ArchlabListops.BUILDER_CONFIGS
    ArchlabListops.BUILDER_CONFIGS = [DepthConfig(name="d5", train_examples=train, test_examples=test,
                                                  deep_examples=deep)]
    try:
        datasets.prepare("listops", data_dir=data_dir)
    finally:
        ArchlabListops.BUILDER_CONFIGS = configs


def every_dataset(tfds_dir, root):
    """`root/tfds`: the session's prepared datasets, and small addition, fortunes and ListOps ones."""
    from pipelines.datasets.text import ArchlabAddition

    tfds = root / "tfds"
    tfds.mkdir(parents=True)
    for prepared in tfds_dir.iterdir():
        (tfds / prepared.name).symlink_to(prepared)
    fortunes = root / "raw" / "fortunes"
    fortunes.mkdir(parents=True)
    fortunes.joinpath("fortunes").write_text("".join(f"Fortune {i}: a stitch in time.\n%\n" for i in range(60)))
    sizes = ArchlabAddition.SPLITS
    ArchlabAddition.SPLITS = {"train": 300, "test": 60}
    try:
        datasets.prepare("addition", data_dir=tfds / "addition")
    finally:
        ArchlabAddition.SPLITS = sizes
    datasets.prepare("fortunes", data_dir=tfds / "fortunes", raw_dir=root / "raw")
    prepare_small_listops(tfds / "listops")
    return tfds


def all_runs(uri: str | None = None, filter_string: str = "") -> list:
    """The MLflow runs of every experiment in the store at `uri` (default: the current one)."""
    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], filter_string=filter_string)


def float32_parity(exported: dict[str, float]) -> float:
    """The largest Keras-to-TFLite difference of the float32 files an export reported."""
    diffs = [v for k, v in exported.items() if k.startswith("tflite_float32") and k.endswith("max_abs_diff")]
    assert diffs, exported
    return max(diffs)


def tiny_params(extra_datasets: tuple[str, ...] = (), **overrides) -> dict:
    """A params document for digits (and `extra_datasets`); `overrides` replace or add
    whole experiments."""
    import copy

    experiments = copy.deepcopy(TINY_EXPERIMENTS)
    experiments.update(overrides)
    return {"datasets": ["digits", *extra_datasets], "experiments": experiments}


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    fetch.fetch_digits(root / "digits")
    return root


@pytest.fixture(scope="session")
def sequence_raw_dir(tmp_path_factory):
    """Japanese-Vowels-like `.ts` files and a laser-like series, small and learnable."""
    root = tmp_path_factory.mktemp("sequence_raw")
    write_ts(root / "japanese_vowels" / "JapaneseVowels_TRAIN.ts", per_speaker=4, seed=1)
    write_ts(root / "japanese_vowels" / "JapaneseVowels_TEST.ts", per_speaker=2, seed=2)
    (root / "santafe_laser").mkdir()
    t = np.arange(700)
    series = 100 + 60 * np.sin(2 * np.pi * t / 9) * (1 + 0.3 * np.sin(2 * np.pi * t / 170))
    np.save(root / "santafe_laser" / "santafe_laser.npy", np.round(series).astype(np.int64)[:, None])
    return root


def write_ts(path, per_speaker: int, seed: int, speakers: int = 9) -> None:
    """A `.ts` file as aeon ships it: 12 channels of 7-29 steps, label 1..9 last; each
    speaker's channels sit at their own level, so the speakers can be told apart."""
    rng = np.random.default_rng(seed)
    lines = ["#synthetic", "@problemName JapaneseVowels", "@dimensions 12", "@equalLength false",
             "@classLabel true 1 2 3 4 5 6 7 8 9", "@data"]
    for speaker in range(1, speakers + 1):
        for _ in range(per_speaker):
            steps = int(rng.integers(7, 30))
            values = speaker / 3 + 0.1 * rng.standard_normal((12, steps))
            lines.append(":".join(",".join(f"{v:.6f}" for v in channel) for channel in values)
                         + f":{speaker}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory, raw_dir, sequence_raw_dir):
    """Prepared datasets as `prepare@<dataset>` writes them: `<root>/<dataset>/`."""
    root = tmp_path_factory.mktemp("tfds")
    datasets.prepare("digits", data_dir=root / "digits", raw_dir=raw_dir)
    for name in ("japanese_vowels", "santafe_laser"):
        datasets.prepare(name, data_dir=root / name, raw_dir=sequence_raw_dir)
    datasets.prepare("mackey_glass", data_dir=root / "mackey_glass")   # generated: no raw data
    return root


@pytest.fixture
def workspace(tmp_path, tfds_dir, monkeypatch):
    """Point the stages at a scratch outputs tree and MLflow store, with digits prepared."""
    return point_stages_at(tmp_path, tfds_dir, monkeypatch)


def point_stages_at(tmp_path, tfds_dir, monkeypatch):
    """`workspace` for a fixture of any scope (with a `pytest.MonkeyPatch` of its own)."""
    monkeypatch.setattr(paths, "TFDS_DIR", tfds_dir)
    monkeypatch.setattr(paths, "EXPERIMENTS", tmp_path / "experiments")
    monkeypatch.setattr(paths, "REPORT", tmp_path / "report")
    monkeypatch.setattr(paths, "STUDY", tmp_path / "study")
    monkeypatch.setattr(paths, "STUDY_DATA", tmp_path / "study_tfds")
    monkeypatch.setattr(paths, "ANOMALY", tmp_path / "anomaly")
    monkeypatch.setattr(paths, "CHECKS", tmp_path / "checks")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # with a user-set tracking URI MLflow puts artifacts in ./mlruns: keep them in tmp_path
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def params() -> config.Params:
    return config.validate(tiny_params())


def pytest_collection_modifyitems(items) -> None:
    """A test that runs stages (it has the `workspace` fixture) trains models: `slow`, like
    the end-to-end runs, so that `make test-fast` keeps to the unit tests."""
    for item in items:
        if "workspace" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
