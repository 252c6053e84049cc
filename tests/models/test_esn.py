"""Echo state networks: the reservoir, its closed-form readout, the representations, the
Mackey–Glass generator, checked against reservoirpy; and the ESN through every stage."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from reservoirpy import ESN
from reservoirpy.datasets import mackey_glass as reservoirpy_mackey_glass
from reservoirpy.datasets import to_forecasting

import models
from edge.runner import TFLiteModel
from models import esn
from models.registry import Head
from pipelines import config, datasets, evaluate, export, paths, tasks, train
from pipelines.datasets.sequences import ArchlabMackeyGlass, mackey_glass
from pipelines.exporters import tflite
from pipelines.exporters.window import fixed_batch_copy
from pipelines.tasks.forecasting import free_run, nrmse
from tests.conftest import tiny_params


def _esn(input_shape, head, **hyperparameters) -> tuple[keras.Model, esn.EsnParams]:
    params = esn.EsnParams(**hyperparameters)
    return models.build("esn", input_shape, head, params), params


def _states(model, x) -> np.ndarray:
    return keras.Model(model.inputs, model.get_layer("reservoir").output).predict(x, verbose=0)


def _padded(rng, n=6, steps=9, features=3) -> np.ndarray:
    """Random sequences of 3..steps real steps, zero-padded at the end."""
    x = rng.standard_normal((n, steps, features)).astype("float32")
    for i, length in enumerate(rng.integers(3, steps + 1, n)):
        x[i, length:] = 0
    return x


# --- the reservoir ------------------------------------------------------------------------

def test_reservoir_is_seeded_sparse_non_trainable_and_at_its_spectral_radius():
    kwargs = dict(sr=0.8, input_scaling=0.3, input_connectivity=0.5, rc_connectivity=0.2,
                  bias=0.1, seed=3)
    w_in, w, b = esn.reservoir_weights(4, 50, **kwargs)
    again = esn.reservoir_weights(4, 50, **kwargs)
    other = esn.reservoir_weights(4, 50, **{**kwargs, "seed": 4})
    assert all(np.array_equal(x, y) for x, y in zip((w_in, w, b), again))
    assert not np.array_equal(w, other[1])
    assert np.max(np.abs(np.linalg.eigvals(w))) == pytest.approx(0.8, rel=1e-9)
    assert np.count_nonzero(w) == round(0.2 * 50 * 50)
    assert np.count_nonzero(w_in) == round(0.5 * 4 * 50)
    assert set(np.unique(w_in)) == {-0.3, 0.0, 0.3}
    assert set(np.unique(b)) == {-0.1, 0.1}

    model, _ = _esn((5, 4), Head(2, "linear"), units=50, **kwargs)
    cell = model.get_layer("reservoir").cell
    assert np.allclose(keras.ops.convert_to_numpy(cell.recurrent_kernel), w.astype("float32"))
    assert [v.name for v in model.trainable_weights] == ["kernel", "bias"]   # the readout only


def test_reservoir_round_trips_through_a_keras_file(tmp_path):
    model, _ = _esn((7, 3), Head(2, "linear"), units=20, sr=0.9, lr=0.5, seed=1)
    path = tmp_path / "esn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).standard_normal((4, 7, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("reservoir").cell.get_config()["sr"] == 0.9


def test_numpy_states_match_the_keras_layer_and_padding_keeps_the_state():
    rng = np.random.default_rng(1)
    x = _padded(rng)
    model, _ = _esn(x.shape[1:], Head(2), units=30, sr=1.1, lr=0.4, bias=0.2, seed=2,
                    input_connectivity=0.5)
    states, real = esn.harvest(model, x, masking=True)
    np.testing.assert_allclose(states, _states(model, x), atol=1e-5)
    lengths = real.sum(axis=1)
    for i, length in enumerate(lengths):
        assert np.all(states[i, length:] == states[i, length - 1])
    last, _ = esn.harvest(model, x, masking=True, every_step=False)
    np.testing.assert_array_equal(last, states[:, -1])


# --- against reservoirpy --------------------------------------------------------------------

def test_mackey_glass_is_reservoirpys_series():
    np.testing.assert_array_equal(mackey_glass(1500), reservoirpy_mackey_glass(1500)[:, 0])
    np.testing.assert_array_equal(mackey_glass(300, tau=30, seed=9),
                                  reservoirpy_mackey_glass(300, tau=30, seed=9)[:, 0])


def test_with_reservoirpys_weights_the_fit_and_forecast_are_reservoirpys():
    """reservoirpy's README ESN and ours with its reservoir: same ridge readout, same forecast."""
    x_train, x_test, y_train, y_test = to_forecasting(reservoirpy_mackey_glass(800), test_size=0.25)
    reference = ESN(units=60, sr=1.25, lr=0.3, ridge=1e-5, seed=0)
    reference.fit(x_train, y_train, warmup=50)
    expected = reference.run(x_test)

    model, params = _esn((None, 1), Head(1, "linear", per_step=True), units=60, sr=1.25, lr=0.3,
                         ridge=1e-5, warmup=50, masking=False)
    cell = model.get_layer("reservoir").cell
    cell.input_kernel.assign(reference.reservoir.Win.toarray().T)
    cell.recurrent_kernel.assign(reference.reservoir.W.toarray().T)
    esn.fit(model, x_train[None], y_train[None], params)
    kernel, bias = model.get_layer("outputs").get_weights()
    np.testing.assert_allclose(kernel[:, 0], reference.readout.Wout[:, 0], rtol=0.05, atol=0.05)
    whole = np.concatenate([x_train, x_test])[None]
    outputs = model.predict(whole, verbose=0)[0, -len(x_test):]
    assert np.max(np.abs(outputs - expected)) < 1e-3
    assert nrmse(outputs, y_test) == pytest.approx(nrmse(expected, y_test), rel=0.02)


# --- readout and representations ------------------------------------------------------------

def test_ridge_readout_is_the_closed_form_solution():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 6, 2)).astype("float32")
    y = x[:, :, 0].sum(axis=1)
    model, params = _esn(x.shape[1:], Head(1, "linear"), units=12, ridge=0.5, masking=False)
    esn.fit(model, x, y, params)
    assert not models.get("esn").trains_by_gradient(params)
    states, _ = esn.harvest(model, x, masking=False, every_step=False)
    centred = states - states.mean(axis=0)
    weights = np.linalg.solve(centred.T @ centred + 0.5 * np.eye(12), centred.T @ (y - y.mean()))
    kernel, bias = model.get_layer("outputs").get_weights()
    np.testing.assert_allclose(kernel[:, 0], weights, rtol=1e-3, atol=1e-4)
    assert bias[0] == pytest.approx(y.mean() - states.mean(axis=0) @ weights, abs=1e-4)


def test_representations_read_only_the_real_steps():
    rng = np.random.default_rng(3)
    x = _padded(rng)
    model, _ = _esn(x.shape[1:], Head(2), units=8, seed=5, input_connectivity=1.0)
    states, real = esn.harvest(model, x, masking=True)
    for representation, expected in (
            ("last", np.stack([s[r][-1] for s, r in zip(states, real)])),
            ("mean", np.stack([s[r].mean(axis=0) for s, r in zip(states, real)]))):
        layer = esn.StateSummary(representation)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(states, mask=real)), expected, atol=1e-6)


def test_model_space_is_the_ridge_fit_of_each_series_next_state():
    rng = np.random.default_rng(4)
    states = np.tanh(rng.standard_normal((5, 12, 6))).astype("float32")
    real = np.ones((5, 12), bool)
    real[0, 7:] = real[3, 4:] = False
    layer = esn.StateSummary("model_space", ridge=0.5, iterations=40)
    got = keras.ops.convert_to_numpy(layer(states, mask=real))
    assert got.shape == (5, 7 * 6)
    for i in range(5):
        s = states[i][real[i]]
        inputs = np.hstack([s[:-1], np.ones((len(s) - 1, 1))])
        exact = np.linalg.solve(inputs.T @ inputs + 0.5 * np.eye(7), inputs.T @ s[1:])
        np.testing.assert_allclose(got[i], exact.reshape(-1), atol=2e-4)


def test_pca_then_model_space_classifies_and_converts_to_builtin_ops(tmp_path):
    rng = np.random.default_rng(5)
    x = _padded(rng, n=60, steps=10, features=2)
    y = (x[:, 0, 0] > 0).astype(int)
    x[:, :, 1] += np.where(y, 1.0, -1.0)[:, None] * (x[:, :, 0] != 0)
    model, params = _esn(x.shape[1:], Head(2), units=30, seed=1, input_connectivity=1.0,
                         representation="model_space", pca_components=4, model_space_ridge=1.0, ridge=1.0)
    esn.fit(model, x, y, params)
    outputs = model.predict(x, verbose=0)
    assert tasks.get("sequence_classification").score(outputs, y) >= 0.9
    exp = config.Experiment(architecture="esn", dataset="japanese_vowels", seed=0,
                            hyperparameters=params.model_dump(),
                            training={"batch_size": 8}, export={})
    edge = fixed_batch_copy(model, exp, Head(2))
    path = tmp_path / "esn.tflite"
    path.write_bytes(tflite.convert(edge, "float32"))
    runner = TFLiteModel(path)
    assert not tflite.flex_ops(runner)
    got = np.stack([runner.predict_one(v) for v in x])
    assert np.max(np.abs(got - outputs)) <= 1e-4


@pytest.mark.parametrize("hyperparameters, head, message", [
    ({"representation": "mean"}, Head(1, "linear", per_step=True), "per-step outputs read every state"),
    ({"rc_connectivity": 0.0004, "units": 50}, Head(1, "linear"), "without recurrent cycles"),
])
def test_impossible_reservoirs_are_refused_at_build(hyperparameters, head, message):
    with pytest.raises(ValueError, match=message):
        _esn((5, 1), head, **hyperparameters)


@pytest.mark.parametrize("hyperparameters, head, message", [
    ({"pca_components": 40, "units": 10}, Head(1, "linear"), "pca_components 40 exceeds"),
    ({"warmup": 5}, Head(1, "linear", per_step=True), "warmup 5 leaves none of the 5 steps"),
])
def test_impossible_fits_are_refused(hyperparameters, head, message):
    model, params = _esn((5, 1), head, **{"masking": False, **hyperparameters})
    x = np.ones((4, 5, 1), "float32")
    y = np.ones((4, 5, 1) if head.per_step else (4,), "float32")
    with pytest.raises(ValueError, match=message):
        esn.fit(model, x, y, params)


# --- free-running generation ----------------------------------------------------------------

def test_free_run_feeds_each_output_back_as_the_next_input():
    inputs = keras.Input((3, 1))
    step_up = keras.Model(inputs, keras.layers.Lambda(lambda v: v[:, -1] + 1.0)(inputs))
    generated = free_run(step_up, np.array([[[0.0], [1.0], [5.0]]], "float32"), 4)
    np.testing.assert_allclose(generated, [[6.0, 7.0, 8.0, 9.0]])


def test_a_forecasting_split_reads_back_as_its_series(tfds_dir):
    splits = datasets.load("mackey_glass", 10, tfds_dir / "mackey_glass")
    series = mackey_glass(ArchlabMackeyGlass.POINTS)
    boundary = 8000
    scaled = (series - series[:boundary].mean()) / series[:boundary].std()
    np.testing.assert_allclose(splits.series("train"), scaled[:boundary], atol=1e-6)
    np.testing.assert_allclose(splits.series("test"), scaled[boundary:], atol=1e-6)
    assert splits.input_shape == (ArchlabMackeyGlass.WINDOW, 1)


# --- through the stages ---------------------------------------------------------------------

ESN_EXPERIMENTS = {
    "mg_esn": {"architecture": "esn", "dataset": "mackey_glass", "seed": 1,
               "hyperparameters": {"units": 200, "sr": 1.0, "lr": 0.3, "input_scaling": 0.5,
                                   "ridge": 1e-6, "masking": False},
               "training": {"batch_size": 256},
               "export": {"variants": ["float32", "float16"], "latency_runs": 3, "parity_examples": 50}},
    "jv_esn": {"architecture": "esn", "dataset": "japanese_vowels", "seed": 1,
               "hyperparameters": {"units": 40, "input_scaling": 1.0, "bias": 1.0,
                                   "representation": "model_space", "pca_components": 8,
                                   "model_space_ridge": 1.0, "ridge": 0.3},
               "training": {"batch_size": 64},
               "export": {"variants": ["float32"], "latency_runs": 3}},
    "jv_esn_dense": {"architecture": "esn", "dataset": "japanese_vowels", "seed": 1,
                     "hyperparameters": {"units": 40, "input_scaling": 0.3, "readout": "dense"},
                     "training": {"epochs": 3, "batch_size": 8, "learning_rate": 0.05,
                                  "early_stopping_patience": 0},
                     "export": {"variants": ["float32"], "latency_runs": 3}},
}


@pytest.fixture
def esn_params() -> config.Params:
    return config.validate(tiny_params(("japanese_vowels", "mackey_glass"), **ESN_EXPERIMENTS))


def test_esn_forecaster_fits_in_closed_form_free_runs_and_exports(workspace, esn_params):
    trained = train.train("mg_esn", esn_params)
    assert trained["epochs_run"] == 0 and "train_seconds" in trained
    history = (paths.train_dir("mg_esn") / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "val_loss" in history[0]
    metrics = evaluate.evaluate("mg_esn", esn_params)
    assert metrics["test_nrmse"] < 0.05 < metrics["baseline_nrmse"]
    assert metrics["free_run_nrmse_84"] < 0.5 and metrics["free_run_trials"] > 50
    assert "free_run_100_nrmse" in metrics
    assert (paths.eval_dir("mg_esn") / "plots" / "free_run.png").exists()
    saved = json.loads((paths.eval_dir("mg_esn") / "metrics.json").read_text())
    assert saved["free_run_nrmse_84"] == metrics["free_run_nrmse_84"]
    exported = export.export("mg_esn", esn_params)
    assert exported["tflite_float32_max_abs_diff"] <= 1e-4
    assert exported["parity_examples"] == 50


def test_esn_classifier_in_model_space_trains_evaluates_and_exports(workspace, esn_params):
    train.train("jv_esn", esn_params)
    # 32 training series of 9 speakers: far above chance (1/9); the real data's figure
    # comes from `make run`
    assert evaluate.evaluate("jv_esn", esn_params)["test_accuracy"] >= 0.8
    exported = export.export("jv_esn", esn_params)
    assert exported["tflite_float32_max_abs_diff"] <= 1e-4
    assert len((paths.export_dir("jv_esn") / "tflite" / "labels.txt").read_text().split()) == 9


def test_dense_readout_trains_by_gradient_with_the_reservoir_frozen(workspace, esn_params):
    before = models.build("esn", (29, 12), Head(9), config.hyperparameters(
        config.experiment(esn_params, "jv_esn_dense"))).get_layer("reservoir").get_weights()
    trained = train.train("jv_esn_dense", esn_params)
    assert trained["epochs_run"] == 3
    model = keras.models.load_model(paths.train_dir("jv_esn_dense") / "model.keras")
    for expected, got in zip(before, model.get_layer("reservoir").get_weights()):
        np.testing.assert_array_equal(expected, got)
    # gradient descent did the learning: the loss fell every epoch, well below chance's
    # cross-entropy, and the readout classifies held-out speakers far better than chance (1/9)
    losses = pd.read_csv(paths.train_dir("jv_esn_dense") / "history.csv")["loss"].tolist()
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.7 * np.log(9)   # ln 9: chance
    accuracy = evaluate.evaluate("jv_esn_dense", esn_params)["test_accuracy"]
    assert accuracy >= 3 / 9   # 6 of the 18 test utterances; the first epoch's readout is at chance


def test_a_closed_form_esn_takes_no_gradient_settings():
    doc = tiny_params(("japanese_vowels", "mackey_glass"), mg_esn={
        **ESN_EXPERIMENTS["mg_esn"], "training": {"batch_size": 256, "epochs": 1}})
    with pytest.raises(config.ParamsError, match=r"experiments\.mg_esn\.training\.epochs: esn is fitted in "
                                                 r"closed form .* takes only batch_size, validation_percent"):
        config.validate(doc)
    dense = tiny_params(("japanese_vowels",), jv_esn_dense={**ESN_EXPERIMENTS["jv_esn_dense"],
                                                            "training": {"batch_size": 8}})
    with pytest.raises(config.ParamsError, match=r"jv_esn_dense\.training\.epochs: Field required"):
        config.validate(dense)
