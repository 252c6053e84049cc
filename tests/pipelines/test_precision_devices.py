"""Precision, XLA and devices as training settings: each family trains and exports under
mixed_bfloat16, mixed_float16 scales the loss, XLA turns determinism off and says so,
MirroredStrategy trains over two logical CPU devices, and MultiWorkerMirroredStrategy's
failure under Keras 3 is pinned (params refuse it with that reason)."""

from __future__ import annotations

import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import models
from pipelines import config, export, paths, stage, train
from pipelines.schema import ParamsError
from tests import children
from tests.conftest import all_runs, every_architecture, every_dataset, float32_parity, tiny_params

FAMILIES = ("mlp", "cnn", "lstm", "esn", "seq2seq", "conv_autoencoder", "vae", "tree_lstm")   # one of each module


@pytest.fixture
def every(workspace, tfds_dir, monkeypatch):
    monkeypatch.setattr(paths, "TFDS_DIR", every_dataset(tfds_dir, workspace))
    return workspace


def test_each_family_trains_in_mixed_bfloat16_and_exports_float32_tflite_within_parity(every):
    doc = every_architecture(precision="mixed_bfloat16")
    doc["experiments"] = {name: doc["experiments"][name] for name in FAMILIES}
    params = config.validate(doc)
    for name in FAMILIES:
        train.train(name, params)
        model = stage.trained_model(name)
        assert models.precision(model) == "mixed_bfloat16", name
        assert models.precision(stage.in_float32(model)) == "float32"
        exported = export.export(name, params)
        assert float32_parity(exported) <= 1e-4, (name, exported)
        assert all_runs(filter_string=f"attributes.run_name = '{name}'")[0].data.tags["precision"] == "mixed_bfloat16"
    mlp = stage.trained_model("mlp")
    assert mlp.get_layer("outputs").dtype_policy.name == "float32"      # softmax in float32
    assert mlp.get_layer("dense_0").compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in mlp.weights)               # variables stay float32
    copy = stage.in_float32(mlp)
    x = np.random.default_rng(0).random((5, 8, 8, 1), np.float32)
    np.testing.assert_allclose(copy.predict(x, verbose=0), mlp.predict(x, verbose=0), atol=0.05)   # bf16 round-off


def test_mixed_float16_scales_the_loss(workspace):
    doc = tiny_params()
    doc["experiments"]["mlp"]["training"].update(precision="mixed_float16", epochs=1)
    train.train("mlp", config.validate(doc))
    tags = all_runs(filter_string="attributes.run_name = 'mlp'")[0].data.tags
    assert (tags["precision"], tags["loss_scaling"]) == ("mixed_float16", "dynamic")
    assert models.precision(keras.models.load_model(paths.train_dir("mlp") / "model.keras")) == "mixed_float16"


def test_xla_turns_op_determinism_off_and_the_run_says_so(workspace):
    doc = tiny_params()
    doc["experiments"]["mlp"]["training"].update(jit_compile=True, epochs=1)
    try:
        train.train("mlp", config.validate(doc))
        tags = all_runs(filter_string="attributes.run_name = 'mlp'")[0].data.tags
        assert (tags["xla"], tags["deterministic"]) == ("on", "false")
    finally:
        from pipelines import runtime

        runtime.setup(0)   # op determinism back on for the tests after this one
    train.train("mlp", config.validate(tiny_params()))
    assert all_runs(filter_string="attributes.run_name = 'mlp'")[0].data.tags["deterministic"] == "true"


@pytest.mark.parametrize(("training", "message"), [
    ({"distribution": "multi_worker"}, r"multi_worker is refused: Keras 3 cannot train under "
                                       r"MultiWorkerMirroredStrategy \(keras-team/keras#20585\)"),
    ({"devices": 2}, "devices: only with distribution: mirrored"),
    ({"backend": "jax", "distribution": "mirrored"}, "needs backend: tensorflow"),
    ({"precision": "float64"}, "precision"),
    ({"backend": "torch"}, "backend"),
])
def test_bad_settings_are_one_line_errors(training, message):
    doc = tiny_params()
    doc["experiments"]["mlp"]["training"].update(training)
    with pytest.raises(ParamsError, match=message) as error:
        config.validate(doc)
    assert "\n" not in str(error.value)


# The MLP, the CNN and an LSTM under MirroredStrategy over two logical CPU devices (the split
# must come before TensorFlow starts: a process of its own).
MIRRORED = """
import tensorflow as tf
from pipelines import config, evaluate, train
from tests.conftest import every_architecture
doc = every_architecture(distribution="mirrored", devices=2)
doc["experiments"] = {k: doc["experiments"][k] for k in ("mlp", "cnn", "lstm")}
doc["experiments"]["lstm"]["training"]["batch_size"] = 4   # the 4 validation sequences: 2 per replica
params = config.validate(doc)
out = {k: {**train.train(k, params), **evaluate.evaluate(k, params)} for k in params.experiments}
print(json.dumps({"devices": [d.name for d in tf.config.list_logical_devices("CPU")], "runs": out}))
"""


@pytest.mark.slow
def test_mirrored_strategy_trains_over_two_logical_cpu_devices(tfds_dir, tmp_path):
    report = children.run(tmp_path, tfds_dir, MIRRORED)
    assert report["devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert sorted(report["runs"]) == ["cnn", "lstm", "mlp"]
    for name, metrics in report["runs"].items():
        assert np.isfinite(metrics["best_val_loss"]) and 0 <= metrics["test_accuracy"] <= 1, name
    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {r.data.tags["devices"] for r in runs} == {"2"}


# One worker of a two-worker MultiWorkerMirroredStrategy cluster on loopback ports.
WORKER = """
import json, os, sys
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in sys.argv[2].split(",")]},
                                      "task": {"type": "worker", "index": int(sys.argv[1])}})
import keras, numpy as np, tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
data = tf.data.Dataset.from_tensor_slices((rng.random((64, 4), np.float32), rng.integers(0, 3, 64))).batch(16)
model.fit(data, epochs=1, verbose=0)
print("trained")
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_fails_under_keras_3_as_keras_20585_reports(tmp_path):
    """Pinned: if a Keras release fixes it, this fails, and `multi_worker` can be let in."""
    (tmp_path / "worker.py").write_text(WORKER)
    ports = ",".join(map(str, _free_ports(2)))
    workers = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(i), ports], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [(w.wait(timeout=300), *w.communicate()) for w in workers]
    for code, out, err in results:
        assert code != 0 and "trained" not in out
        assert "ValueError: Attempt to convert a value (PerReplica:{" in err
        assert "with an unsupported type (<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor" in err
