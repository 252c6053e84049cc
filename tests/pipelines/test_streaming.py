"""Streaming forecasters through the stages: the `_stream` scores, the step model's export
(`pipelines/exporters/stream.py`) and the edge runner's `forecast` command."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from sklearn.linear_model import Ridge

import models
from edge import runner
from models import esn
from models.streaming import Stepper, step_model
from pipelines import config, datasets, evaluate, export, paths, tasks, train
from pipelines.exporters.stream import Streaming
from tests.conftest import point_stages_at, tiny_params

EXPERIMENTS = {
    "laser_gru": {"architecture": "gru", "dataset": "santafe_laser", "seed": 3,
                  "hyperparameters": {"units": 8, "masking": False},
                  "training": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "early_stopping_patience": 0},
                  "evaluation": {"horizon": 10, "trial_stride": 50},
                  "export": {"variants": ["float32", "float16", "int8"], "latency_runs": 3,
                             "parity_examples": 20, "representative_examples": 20}},
    "laser_esn": {"architecture": "esn", "dataset": "santafe_laser", "seed": 1,
                  "hyperparameters": {"units": 30, "lr": 0.5, "bias": 0.2, "ridge": 1e-4, "masking": False,
                                      "regime": "continuous", "warmup": 40},
                  "training": {"batch_size": 64, "max_train_examples": 200},
                  "export": {"variants": ["float32"], "latency_runs": 3, "parity_examples": 10}},
    "laser_bi_gru": {"architecture": "bi_gru", "dataset": "santafe_laser", "seed": 3,
                     "hyperparameters": {"units": 4, "masking": False},
                     "training": {"epochs": 1, "batch_size": 64, "learning_rate": 0.01},
                     "export": {"variants": ["float32"], "latency_runs": 3, "parity_examples": 10}},
}


@pytest.fixture(scope="module")
def params() -> config.Params:
    return config.validate(tiny_params(("santafe_laser",), **EXPERIMENTS))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tfds_dir, params):
    """laser_gru trained, evaluated and exported once for the module's tests."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_stages_at(tmp_path_factory.mktemp("streaming"), tfds_dir, monkeypatch)
        train.train("laser_gru", params)
        metrics = evaluate.evaluate("laser_gru", params)
        yield metrics, export.export("laser_gru", params)


def keras_stream(points: np.ndarray) -> np.ndarray:
    """The trained model's Keras step model reading `points` (T, 1) from zero states."""
    model = keras.models.load_model(paths.train_dir("laser_gru") / "model.keras")
    return Stepper(step_model(model)).read(points[None])[0][0]


def sequence_forecasts(points: np.ndarray) -> np.ndarray:
    """The trained GRU's forecast after each of `points` (T,), from a zero state, by a
    sequence-returning copy of its layer over the whole series (not the step model)."""
    model = keras.models.load_model(paths.train_dir("laser_gru") / "model.keras")
    gru = model.get_layer("gru_0")
    whole = keras.layers.GRU.from_config({**gru.get_config(), "return_sequences": True})
    whole.build((None, None, 1))
    whole.set_weights(gru.get_weights())
    states = whole(points[None, :, None].astype(np.float32))
    return keras.ops.convert_to_numpy(model.get_layer("outputs")(states))[0, :, 0]


def test_forecasters_are_scored_streamed_beside_windowed(exported):
    metrics, _ = exported
    for windowed in ("test_nrmse", "free_run_nrmse_10", "free_run_100_nrmse"):
        assert windowed in metrics and f"{windowed}_stream" in metrics, windowed
    saved = json.loads((paths.eval_dir("laser_gru") / "metrics.json").read_text())
    assert saved["test_nrmse_stream"] == metrics["test_nrmse_stream"]
    # recomputed another way: the GRU layer over the whole series, warm-up (the window: the
    # last 32 training points) then the test series, scored on the windowed targets
    splits = datasets.load("santafe_laser", 10)
    train, test = splits.series("train"), splits.series("test")
    forecasts = sequence_forecasts(np.concatenate([train[-32:], test[:-1]]))
    after_test_window = forecasts[32 + 31:]             # after each test point from the 32nd on
    expected = np.sqrt(np.mean((after_test_window - test[32:]) ** 2)) / np.std(test[32:])
    assert metrics["test_nrmse_stream"] == pytest.approx(expected, rel=1e-4)
    # each free run: the state after its window's last test point, 10 forecasts fed back
    errors = []
    for start in range(0, len(test) - 32 - 10 + 1, 50):
        points = np.concatenate([train[-32:], test[:start + 32]])
        for _ in range(10):
            points = np.append(points, sequence_forecasts(points)[-1])
        errors.append(points[-1] - test[start + 32 + 9])
    expected = np.sqrt(np.mean(np.square(errors))) / np.std(test)
    assert metrics["free_run_nrmse_10_stream"] == pytest.approx(expected, rel=1e-4)


def test_a_series_reads_as_one_stream_with_its_training_targets_marked(exported, params, sequence_raw_dir):
    splits = datasets.load("santafe_laser", 10)
    points, targets, positions = splits.stream("train")
    series = splits.series("train")
    np.testing.assert_array_equal(points[:, 0], series[:-1])
    np.testing.assert_array_equal(targets, series[1:])
    np.testing.assert_array_equal(positions, np.arange(1, len(series)))
    # the training targets are train[:90%] of the builder's split; the validation's are not
    stream = tasks.get("forecasting", "gru").training_stream(splits)
    windows = len(series) - 32
    assert stream.fitted.sum() == len(splits.positions()) == round(windows * 0.9)
    assert not stream.fitted[:31].any()      # no target before the first full window
    limited = tasks.get("forecasting", "gru").training_stream(splits, limit=100)
    assert limited.fitted.sum() == 100 and set(np.flatnonzero(limited.fitted)) <= set(np.flatnonzero(stream.fitted))
    # the scaling is the raw training part's: what the runner turns a raw series into
    raw = np.load(sequence_raw_dir / "santafe_laser" / "santafe_laser.npy")[:, 0].astype(np.float64)
    boundary = round(len(raw) * 0.8)
    assert splits.scaling["mean"][0] == pytest.approx(raw[:boundary].mean())
    assert splits.scaling["std"][0] == pytest.approx(raw[:boundary].std())
    np.testing.assert_allclose(series, (raw[:boundary] - raw[:boundary].mean()) / raw[:boundary].std(), atol=1e-5)


def test_the_step_file_follows_keras_over_the_whole_test_series(exported, params):
    _, metrics = exported
    folder = paths.export_dir("laser_gru") / "tflite"
    assert sorted(p.name for p in folder.glob("*step.tflite")) == ["float16_step.tflite", "float32_step.tflite"]
    assert (folder / "int8.tflite").exists()   # the window model's int8 alone
    assert metrics["tflite_float32_step_max_abs_diff"] <= 1e-4
    assert abs(metrics["tflite_float32_step_nrmse_delta"]) < 1e-4
    spec = json.loads((folder / "stream.json").read_text())
    splits = datasets.load("santafe_laser", 10)
    assert spec["window"] == 32 and spec["channels"] == 1 and spec["states"] == [8]
    assert spec["mean"] == splits.scaling["mean"] and spec["std"][0] > 0
    model = runner.Forecaster.from_folder(folder)
    assert "WHILE" not in model.model.op_names() and not [o for o in model.model.op_names() if "Flex" in o]
    timings = json.loads((paths.export_dir("laser_gru") / paths.TIMINGS).read_text())
    assert timings["tflite_float32_step_latency_ms"] > 0 and timings["keras_step_latency_ms"] > 0
    # `make bench` times one point through each step file beside a window through the window file
    from pipelines import bench
    streamed = bench.inference(params)[1].set_index("variant")
    assert list(streamed.index) == ["float32", "float16"] and set(streamed["experiment"]) == {"laser_gru"}
    assert (streamed["W"] == 32).all() and (streamed["step ms"] > 0).all()


def test_the_runner_streams_a_series_as_the_keras_step_model_does(exported, tmp_path, capsys):
    folder = paths.export_dir("laser_gru") / "tflite"
    splits = datasets.load("santafe_laser", 10)
    test = splits.series("test")
    spec = json.loads((folder / "stream.json").read_text())
    raw = test * spec["std"][0] + spec["mean"][0]   # the laser test series in its own units
    np.save(tmp_path / "series.npy", raw)
    assert runner.main(["forecast", str(folder), str(tmp_path / "series.npy"), "--free-run", "5",
                        "--output", str(tmp_path / "out.npy")]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == len(test) + 5
    out = np.load(tmp_path / "out.npy")
    expected = keras_stream(test[:, None].astype(np.float32))
    np.testing.assert_allclose((out[:len(test)] - spec["mean"][0]) / spec["std"][0], expected, atol=1e-4)
    # the free run continues from the last state, each forecast read as the next point
    model = keras.models.load_model(paths.train_dir("laser_gru") / "model.keras")
    stepper = Stepper(step_model(model))
    _, states, _ = stepper.read(test[None, :, None].astype(np.float32))
    generated = stepper.free_run(expected[-1:], states, 6)[0, 1:]
    np.testing.assert_allclose((out[len(test):] - spec["mean"][0]) / spec["std"][0], generated, atol=1e-4)
    # a one-column CSV with a header, already standardised, gives the same forecasts
    (tmp_path / "series.csv").write_text("value\n" + "\n".join(f"{v:.9g}" for v in test) + "\n")
    assert runner.main(["forecast", str(folder), str(tmp_path / "series.csv"), "--scaled",
                        "--output", str(tmp_path / "scaled.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "scaled.npy"), expected, atol=1e-4)


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,2\n3,4\n", "shaped \\(2, 2\\); the model reads \\(T, 1\\)"),
    ("value\n1\nx\n", "not a CSV of numbers"),
    ("value\n1\nnan\n", "missing or infinite values"),
])
def test_the_runner_refuses_a_bad_series_in_one_line(exported, tmp_path, capsys, content, message):
    (tmp_path / "bad.csv").write_text(content)
    folder = paths.export_dir("laser_gru") / "tflite"
    assert runner.main(["forecast", str(folder), str(tmp_path / "bad.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err


def test_a_bidirectional_forecaster_is_scored_and_exported_from_windows_alone(exported, params, tmp_path):
    """(An untrained model: what matters is which scores and files it gets.)"""
    exp = params.experiments["laser_bi_gru"]
    splits = datasets.load("santafe_laser", 10)
    task = tasks.get("forecasting", "bi_gru")
    model = models.build("bi_gru", task.input_shape(splits), task.head(splits), config.hyperparameters(exp))
    x, y = task.arrays(splits.test)
    metrics, _ = task.extra(model, splits, x, y, tmp_path, task.Evaluation())
    assert "free_run_nrmse_84" in metrics and not any(k.endswith("_stream") for k in metrics)
    edge = Streaming(model, exp, task, splits, ["float32"])
    assert edge.spec() is None
    edge.write("float32", tmp_path, None)
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == ["float32.tflite"]
    assert Streaming.one_point(tmp_path, "float32") is None
    assert edge.extras(tmp_path, "float32", exp.export, "") == ({}, {})


def test_a_continuous_esn_is_fitted_through_the_train_stage_on_its_training_targets(workspace, params):
    train.train("laser_esn", params)
    model = keras.models.load_model(paths.train_dir("laser_esn") / "model.keras")
    splits = datasets.load("santafe_laser", 10)
    stream = tasks.get("forecasting", "esn").training_stream(splits, limit=200)   # max_train_examples
    states, _ = esn.harvest(model, stream.points[None], masking=False)
    used = stream.fitted & (np.arange(len(stream.fitted)) >= 40)
    assert used.sum() == 200 - np.sum(stream.fitted[:40])
    ridge = Ridge(alpha=1e-4, solver="cholesky").fit(states[0][used].astype(np.float64), stream.targets[used])
    kernel, bias = model.get_layer("outputs").get_weights()
    np.testing.assert_allclose(kernel[:, 0], ridge.coef_, rtol=1e-3, atol=1e-4)
    assert bias[0] == pytest.approx(ridge.intercept_, abs=1e-4)


def test_the_runner_reads_a_csvs_columns_by_the_names_the_model_gives(tmp_path):
    named = tmp_path / "named.csv"
    named.write_text("\ufefftime,load,temp\n1,10,20\n2,11,21\n", encoding="utf-8")
    assert runner.read_series(str(named), 2, ["temp", "load"]).tolist() == [[20, 10], [21, 11]]
    missing = r"no column 'wind' \(the model reads wind, load; the file has time, load, temp\)"
    with pytest.raises(ValueError, match=missing):
        runner.read_series(str(named), 2, ["wind", "load"])
    # unnamed: the model's columns in order, a header skipped, a byte-order mark too
    plain = tmp_path / "plain.csv"
    plain.write_text("\ufeff5\n6\n", encoding="utf-8")
    assert runner.read_series(str(plain), 1).tolist() == [[5], [6]]
    with pytest.raises(ValueError, match=r"shaped \(2, 3\); the model reads \(T, 2\)"):
        runner.read_series(str(named), 2)
