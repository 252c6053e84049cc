"""Each stage on digits with tiny settings, what it writes, and what MLflow records."""

import json
import subprocess
import sys

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow import MlflowClient

from pipelines import config, datasets, evaluate, export, paths, report, tasks, tracking, train, training
from pipelines.exporters import tflite
from pipelines.runtime import StageError
from tests.conftest import tiny_params


@pytest.fixture
def trained(workspace, params):
    train.train("mlp", params)
    return params


def test_train_writes_model_history_and_timings(trained):
    out = paths.train_dir("mlp")
    model = keras.models.load_model(out / "model.keras")
    assert model.output_shape == (None, 10)
    history = pd.read_csv(out / "history.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(history) == metrics["epochs_run"] <= 4
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert not (paths.experiment_dir("mlp") / "backup").exists()   # the training backup, removed once done
    assert (out / "learning_curves.png").stat().st_size > 1000
    assert json.loads((out / paths.TIMINGS).read_text())["train_seconds"] > 0
    assert not (paths.EXPERIMENTS / "mlp" / "train.partial").exists()


def test_evaluate_reports_shared_metric_names(trained):
    metrics = evaluate.evaluate("mlp", trained)
    assert set(metrics) == {"test_accuracy", "test_loss", "test_examples"}
    assert metrics["test_examples"] == 359
    assert metrics["test_accuracy"] > 0.7          # 4 epochs on digits
    out = paths.eval_dir("mlp")
    assert json.loads((out / "metrics.json").read_text()) == metrics
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 359
    assert np.mean(predictions["actual"] == predictions["predicted"]) == pytest.approx(metrics["test_accuracy"])
    assert (out / "plots" / "confusion_matrix.png").stat().st_size > 1000


def test_same_seed_gives_identical_results(workspace, params):
    train.train("mlp", params)
    first = evaluate.evaluate("mlp", params)
    first_bytes = (paths.train_dir("mlp") / "model.keras").read_bytes()
    train.train("mlp", params)
    second = evaluate.evaluate("mlp", params)
    assert first == second
    assert (paths.train_dir("mlp") / "model.keras").read_bytes() == first_bytes


def test_another_seed_gives_other_weights(workspace, params):
    train.train("mlp", params)
    weights = keras.models.load_model(paths.train_dir("mlp") / "model.keras").get_weights()
    doc = tiny_params()
    doc["experiments"]["mlp"]["seed"] = 8
    train.train("mlp", config.validate(doc))
    other = keras.models.load_model(paths.train_dir("mlp") / "model.keras").get_weights()
    assert not np.array_equal(weights[0], other[0])


def test_export_variants_parity_and_sizes(trained):
    metrics = export.export("mlp", trained)
    files = paths.export_dir("mlp") / "tflite"
    for variant in config.VARIANTS:
        assert metrics[f"tflite_{variant}_size_bytes"] == (files / f"{variant}.tflite").stat().st_size
        assert metrics[f"tflite_{variant}_latency_ms"] > 0
        assert abs(metrics[f"tflite_{variant}_accuracy_delta"]) < 0.05
    assert metrics["tflite_float32_max_abs_diff"] <= 1e-4
    assert metrics["tflite_int8_size_bytes"] < metrics["tflite_float32_size_bytes"]
    assert metrics["tflite_dynamic_range_size_bytes"] < metrics["tflite_float32_size_bytes"]
    assert (files / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    stored = json.loads((paths.export_dir("mlp") / "metrics.json").read_text())
    assert "tflite_float32_latency_ms" not in stored           # timings live outside DVC
    assert "tflite_float32_latency_ms" in json.loads((paths.export_dir("mlp") / paths.TIMINGS).read_text())


def test_parity_gate_fails_the_stage_and_writes_nothing(trained):
    doc = tiny_params()
    doc["experiments"]["mlp"]["export"]["float32_tolerance"] = 1e-12   # below float32 round-off
    with pytest.raises(StageError, match=r"float32 TFLite outputs differ from Keras by .* > "
                                         r"export.float32_tolerance 1e-12"):
        export.export("mlp", config.validate(doc))
    assert not paths.export_dir("mlp").exists()
    tflite.check_parity("float32", 5e-5, 1e-4)
    tflite.check_parity("int8", 0.5, 1e-4)          # only float32 is gated
    with pytest.raises(StageError):
        tflite.check_parity("float32", float("nan"), 1e-4)


def test_flex_ops_are_refused():
    class Bessel(keras.layers.Layer):
        def call(self, x):
            return tf.math.bessel_i0e(x)    # no TFLite builtin: would need a Flex op

    inputs = keras.Input((4,), batch_size=1)
    model = keras.Model(inputs, Bessel()(inputs))
    with pytest.raises(StageError, match=r"needs non-builtin \(Flex\) ops BesselI0e"):
        tflite.convert(model, "float32")


def test_int8_variant_is_fully_integer(trained):
    export.export("mlp", trained)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(paths.export_dir("mlp") / "tflite" / "int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


def test_edge_runner_predicts_like_keras(trained, tmp_path):
    export.export("mlp", trained)
    splits = datasets.load("digits", 10)
    x, _ = tasks.get(splits.task).arrays(splits.test, limit=40)
    np.save(tmp_path / "inputs.npy", x)
    model = keras.models.load_model(paths.train_dir("mlp") / "model.keras")
    expected = model.predict(x, verbose=0).argmax(axis=1)
    files = paths.export_dir("mlp") / "tflite"
    result = subprocess.run([sys.executable, str(paths.ROOT / "edge" / "runner.py"), str(files / "float32.tflite"),
                             str(tmp_path / "inputs.npy"), "--output", str(tmp_path / "out.npy")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [int(v) for v in result.stdout.split()] == expected.tolist()
    assert np.load(tmp_path / "out.npy").shape == (40, 10)
    bad = subprocess.run([sys.executable, str(paths.ROOT / "edge" / "runner.py"), str(files / "float32.tflite"),
                          str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "error: inputs have shape (40, 10); the model takes (N, 8, 8, 1)" in bad.stderr.splitlines()


def test_edge_runner_runs_where_tensorflow_cannot_be_imported(tmp_path):
    """The device has LiteRT and NumPy only: the runner, copied out of the repo, predicts in a
    Python where importing tensorflow, keras or archlab's packages fails."""
    inputs = keras.Input((3,), batch_size=1)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="outputs")(inputs))
    (tmp_path / "model.tflite").write_bytes(tflite.convert(model, "float32"))
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "runner.py").write_text((paths.ROOT / "edge" / "runner.py").read_text())
    blocked = ("import sys, runpy\n"
               "for name in ('tensorflow', 'keras', 'models', 'pipelines', 'edge', 'tf_keras'):\n"
               "    sys.modules[name] = None   # `import name` now raises ImportError\n"
               "sys.argv = ['runner.py', 'model.tflite', 'x.npy', '--output', 'y.npy']\n"
               "runpy.run_path('runner.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", blocked], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)
    assert result.stdout.split() == [str(i) for i in expected.argmax(axis=1)]


def test_a_file_with_flex_ops_is_refused_by_name():
    class WithFlex:
        def op_names(self):
            return ["FULLY_CONNECTED", "FlexTensorScatterUpdate"]

    with pytest.raises(StageError, match=r"TFLite export float32_decoder\.tflite uses non-builtin ops "
                                         r"\['FlexTensorScatterUpdate'\]"):
        tflite.check_builtin(WithFlex(), paths.ROOT / "float32_decoder.tflite")


def test_float32_greedy_outputs_must_agree_with_keras_on_every_example():
    expected = np.array([[3, 4, 2], [5, 2, 0], [7, 7, 2]])
    assert export.check_agreement("float32", expected.copy(), expected) == 1.0
    wrong = expected.copy()
    wrong[1, 0] = 6
    assert export.check_agreement("float16", wrong, expected) == pytest.approx(2 / 3)
    with pytest.raises(StageError, match="float32 TFLite greedy outputs differ from Keras's on 1 of 3 examples"):
        export.check_agreement("float32", wrong, expected)


def test_report_leaderboard(workspace, params):
    for name in params.experiments:
        train.train(name, params)
        evaluate.evaluate(name, params)
        export.export(name, params)
    frame = report.report(params)
    assert set(frame["experiment"]) == {"mlp", "cnn"}
    assert (frame["task"] == "image_classification/digits").all()
    assert frame["headline"].is_monotonic_decreasing
    for name in params.experiments:
        accuracy = json.loads((paths.eval_dir(name) / "metrics.json").read_text())["test_accuracy"]
        assert frame.set_index("experiment").loc[name, "headline"] == accuracy
    text = (paths.REPORT / "leaderboard.md").read_text()
    assert "## image_classification/digits" in text and "| mlp " in text and "| cnn " in text
    assert (paths.REPORT / "leaderboard.png").stat().st_size > 5000
    summary = json.loads((paths.REPORT / "summary.json").read_text())
    assert summary["mlp"]["headline"] == frame.set_index("experiment").loc["mlp", "headline"]
    assert not any("latency" in key or "seconds" in key for row in summary.values() for key in row)
    runs = mlflow.search_runs(experiment_names=["leaderboard"], output_format="list")
    assert len(runs) == 1
    artifacts = {a.path for a in MlflowClient().list_artifacts(runs[0].info.run_id)}
    assert artifacts == {"leaderboard.md", "leaderboard.csv", "leaderboard.png"}
    champion = MlflowClient().get_model_version_by_alias("image_classification.digits", "champion")
    best = frame.iloc[0]
    run = json.loads((paths.train_dir(best["experiment"]) / "run.json").read_text())
    assert champion.run_id == run["run_id"] and champion.tags["archlab_experiment"] == best["experiment"]
    assert champion.tags["tflite"] == f"runs:/{run['run_id']}/tflite"
    assert float(champion.tags["test_accuracy"]) == pytest.approx(best["headline"], abs=1e-6)
    report.report(params)   # the same champion: no new version
    assert MlflowClient().get_model_version_by_alias("image_classification.digits", "champion").version == \
        champion.version
    machines = json.loads((paths.REPORT / "machines.json").read_text())
    assert machines["mlp"]["machine_id"] == tracking.fingerprint()["machine_id"]


def test_mlflow_run_read_back(trained):
    evaluate.evaluate("mlp", trained)
    export.export("mlp", trained)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("image_classification/digits")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "mlp"
    assert json.loads((paths.train_dir("mlp") / "run.json").read_text())["run_id"] == run.info.run_id
    params = run.data.params
    assert params["architecture"] == "mlp" and params["training.epochs"] == "4"
    assert params["hyperparameters.hidden_units"] == "[32]" and params["seed"] == "7"
    metrics = run.data.metrics
    for key in ("test_accuracy", "test_loss", "tflite_float32_size_bytes", "tflite_int8_latency_ms",
                "tflite_float32_max_abs_diff", "tflite_int8_accuracy_delta", "train_seconds"):
        assert key in metrics, key
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == int(metrics["epochs_run"])
    tags = run.data.tags
    for key in ("architecture", "dataset", "task", "git_commit", "data_hash", "dvc_stage", "host", "cpu",
                "gpu", "tensorflow_version", "keras_version", "cuda_version", "cudnn_version"):
        assert tags.get(key), key
    assert (tags["architecture"], tags["dataset"], tags["task"]) == ("mlp", "digits", "image_classification")
    assert tags["tensorflow_version"] == tf.__version__ and tags["keras_version"] == keras.__version__
    assert tags["machine_id"] == tracking.fingerprint()["machine_id"] and len(tags["machine_id"]) == 12
    assert (tags["precision"], tags["xla"], tags["devices"], tags["keras_backend"]) == \
        ("float32", "off", "1", "tensorflow")
    assert tags["headline_metric"] == "test_accuracy" and tags["higher_is_better"] == "true"
    assert tags["params_hash"] == tracking.run_tags("mlp", "mlp", "digits", "t", "s",
                                                    params=tracking.flat_params(trained.experiments["mlp"]))[
        "params_hash"]
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"   # the UI's runs view
    for key in ("train_examples_per_second", "peak_memory_mb", "seconds_per_epoch"):
        assert metrics[key] > 0, key
    assert metrics["train_examples_per_second"] == pytest.approx(
        metrics["epochs_run"] * int(run.data.params["train_examples"]) / metrics["train_seconds"], rel=0.01)
    assert any(key.startswith("system/cpu_utilization_percentage") for key in metrics)   # MLflow system metrics
    (data,) = run.inputs.dataset_inputs   # the UI's Dataset column
    assert (data.dataset.name, data.dataset.digest) == ("digits", tracking.dataset_hash("digits")[:8])
    sizes = {t.key: t.value for t in data.tags}
    assert sizes["mlflow.data.context"] == "training" and sizes["train_examples"] == params["train_examples"]
    assert int(sizes["test_examples"]) == int(metrics["test_examples"]) and int(sizes["validation_examples"]) > 0
    artifacts = {a.path for folder in ("plots", "tflite") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"plots/learning_curves.png", "plots/confusion_matrix.png", "tflite/float32.tflite",
            "tflite/int8.tflite", "tflite/dynamic_range.tflite", "tflite/float16.tflite"} <= artifacts
    (logged,) = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert logged.source_run_id == run.info.run_id
    carried = {f.path for f in client.list_logged_model_artifacts(logged.model_id, "tflite")}
    assert {"tflite/float32.tflite", "tflite/int8.tflite", "tflite/labels.txt"} <= carried   # the registry's copy
    loaded = mlflow.keras.load_model(logged.model_uri)
    assert loaded.output_shape == (None, 10)
    assert mlflow.models.get_model_info(logged.model_uri).signature is not None


def test_catalog_dataset_trains_under_mock_data(workspace):
    import tensorflow_datasets as tfds

    doc = tiny_params()
    doc["datasets"] = ["tfds/fashion_mnist"]
    doc["experiments"] = {"mlp": {**doc["experiments"]["mlp"], "dataset": "tfds/fashion_mnist"}}
    doc["experiments"]["mlp"]["training"]["epochs"] = 1
    with tfds.testing.mock_data(num_examples=40):
        train.train("mlp", config.validate(doc))
        metrics = evaluate.evaluate("mlp", config.validate(doc))
    # the catalog's own splits and labels reached the generic path: 40 mocked test images,
    # scored with the catalog's class names
    assert metrics["test_examples"] == 40
    table = pd.read_csv(paths.eval_dir("mlp") / "predictions.csv")
    assert len(table) == 40 and set(table["actual"]) <= set(tfds.builder("fashion_mnist").info.features["label"].names)
    assert keras.models.load_model(paths.train_dir("mlp") / "model.keras").input_shape == (None, 28, 28, 1)


def test_diverging_run_is_a_clear_error(workspace):
    doc = tiny_params()
    doc["experiments"]["mlp"]["training"]["learning_rate"] = 10.0
    doc["experiments"]["mlp"]["training"]["optimizer"] = "sgd"
    doc["experiments"]["mlp"]["hyperparameters"].update(dropout_rate=0.0, activation="linear")
    with pytest.raises(StageError, match=r"training diverged .*lower training.learning_rate"):
        train.train("mlp", config.validate(doc))
    assert not (paths.train_dir("mlp") / "model.keras").exists()


def test_cosine_schedule_anneals_the_learning_rate():
    doc = tiny_params()
    doc["experiments"]["mlp"]["training"].update(lr_schedule="cosine", clipnorm=1.0)
    settings = config.validate(doc).experiments["mlp"].training
    optimizer = training.make_optimizer(settings, steps_per_epoch=10)
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    optimizer.iterations.assign(20)             # half of 4 epochs x 10 steps
    assert float(optimizer.learning_rate) == pytest.approx(0.005, rel=1e-3)
    optimizer.iterations.assign(40)
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-6)
    assert optimizer.clipnorm == 1.0
    constant = training.make_optimizer(config.validate(tiny_params()).experiments["mlp"].training, 10)
    constant.iterations.assign(40)
    assert float(constant.learning_rate) == pytest.approx(0.01)
