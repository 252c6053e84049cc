"""Keras backends: every registered architecture trains through the one training path under
JAX (a process of its own: Keras picks its backend once, at import), and a JAX-trained
model is evaluated and exported under TensorFlow's, through the same parity gate."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import models
from pipelines import config, evaluate, export, paths
from tests import children
from tests.conftest import all_runs, every_architecture, every_dataset, float32_parity

pytestmark = pytest.mark.slow

# Train every experiment of `every_architecture(backend="jax")` in a scratch outputs tree.
UNDER_JAX = """
import keras
from pipelines import config, train
from tests.conftest import every_architecture
params = config.validate(every_architecture(backend="jax"))
trained = {name: train.train(name, params) for name in params.experiments}
print(json.dumps({"backend": keras.backend.backend(), "trained": trained}))
"""


@pytest.fixture(scope="module")
def under_jax(tfds_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("jax")
    tfds = every_dataset(tfds_dir, root)
    return root, tfds, children.run(root, tfds, UNDER_JAX, timeout=900, KERAS_BACKEND="jax")


def test_every_registered_architecture_trains_under_jax(under_jax):
    root, _, report = under_jax
    assert report["backend"] == "jax"
    assert sorted(report["trained"]) == models.names()
    for name, metrics in report["trained"].items():
        assert np.isfinite(metrics["best_val_loss"]), name
        assert (root / "experiments" / name / "train" / "model.keras").exists(), name
    runs = all_runs(f"sqlite:///{root / 'mlflow.db'}")
    assert sorted({r.info.run_name for r in runs}) == models.names()
    assert {r.data.tags["keras_backend"] for r in runs} == {"jax"}
    # XLA promises no bit-identical reruns: measured here, the LSTM trained twice with one seed
    # in one process came out different (the MLP and the VAE did not)
    assert {r.data.tags["deterministic"] for r in runs} == {"false"}
    assert {r.data.tags["xla"] for r in runs if r.info.run_name != "esn"} == {"on"}


def test_a_jax_trained_model_is_evaluated_and_exported_under_tensorflow(under_jax, monkeypatch):
    root, tfds, _ = under_jax
    assert keras.backend.backend() == "tensorflow"
    monkeypatch.setattr(paths, "TFDS_DIR", tfds)
    monkeypatch.setattr(paths, "EXPERIMENTS", root / "experiments")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.chdir(root)
    params = config.validate(every_architecture(backend="jax"))
    for name in ("cnn", "vae"):
        scores = evaluate.evaluate(name, params)
        assert all(np.isfinite(v) for v in scores.values() if isinstance(v, float)), name
        exported = export.export(name, params)
        assert float32_parity(exported) <= 1e-4, (name, exported)
