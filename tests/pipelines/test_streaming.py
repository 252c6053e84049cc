"""Streaming forecasters through the stages: the `_stream` scores, the step model's export
(`pipelines/exporters/stream.py`) and the edge runner's `forecast` command."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from edge import runner
from models.streaming import Stepper, step_model
from pipelines import config, datasets, evaluate, export, paths, train
from pipelines.exporters.stream import Streaming
from tests.conftest import point_stages_at, tiny_params

EXPERIMENTS = {
    "laser_gru": {"architecture": "gru", "dataset": "santafe_laser", "seed": 3,
                  "hyperparameters": {"units": 8, "masking": False},
                  "training": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "early_stopping_patience": 0},
                  "evaluation": {"horizon": 10, "trial_stride": 50},
                  "export": {"variants": ["float32", "float16", "int8"], "latency_runs": 3,
                             "parity_examples": 20, "representative_examples": 20}},
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


def test_forecasters_are_scored_streamed_beside_windowed(exported):
    metrics, _ = exported
    for windowed in ("test_nrmse", "free_run_nrmse_10", "free_run_100_nrmse"):
        assert 0 < metrics[f"{windowed}_stream"] < 10 * metrics["baseline_nrmse"], windowed
        assert f"{windowed}" in metrics
    saved = json.loads((paths.eval_dir("laser_gru") / "metrics.json").read_text())
    assert saved["test_nrmse_stream"] == metrics["test_nrmse_stream"]


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


def test_a_bidirectional_forecaster_exports_its_window_model_alone(workspace, params):
    train.train("laser_bi_gru", params)
    metrics = evaluate.evaluate("laser_bi_gru", params)
    assert "test_nrmse_stream" not in metrics and "free_run_nrmse_84" in metrics
    export.export("laser_bi_gru", params)
    folder = paths.export_dir("laser_bi_gru") / "tflite"
    assert sorted(p.name for p in folder.iterdir()) == ["float32.tflite"]
    assert Streaming.one_point(folder, "float32") is None
