"""Step models of forecasters (models/streaming.py) and the echo state network's continuous regime."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

import models
from models import esn
from models.registry import Head, Stream
from models.streaming import Stepper, step_model

FORECAST = Head(1, "linear")
RNG = np.random.default_rng(0)


@pytest.mark.parametrize("architecture, hyperparameters", [
    ("lstm", {"units": 6, "masking": False}),
    ("gru", {"units": 5, "layers": 2, "dense_units": [4]}),
    ("simple_rnn", {"units": 4, "activation": "relu"}),
    ("esn", {"units": 30, "masking": False}),
    ("esn", {"units": 30, "pca_components": 4, "lr": 0.5}),
])
def test_stepping_a_window_from_zero_states_is_the_window_model(architecture, hyperparameters):
    model = models.build(architecture, (12, 2), FORECAST, hyperparameters)
    model.get_layer("outputs").set_weights([RNG.standard_normal((model.get_layer("outputs").input.shape[-1], 1)),
                                            np.array([0.3])])
    windows = RNG.standard_normal((3, 12, 2)).astype("float32")
    if hyperparameters.get("masking", True):
        windows[1, 5] = 0.0   # a masked point keeps the state, as in the window model
    forecasts, states, _ = Stepper(step_model(model)).read(windows)
    np.testing.assert_allclose(forecasts[:, -1], model.predict(windows, verbose=0)[:, 0], atol=1e-5)
    # the states carried on: stepping on from them is reading the longer window
    longer = np.concatenate([windows, RNG.standard_normal((3, 4, 2)).astype("float32")], axis=1)
    on, _, _ = Stepper(step_model(model)).read(longer[:, 12:], states)
    whole = models.build(architecture, (16, 2), FORECAST, hyperparameters)
    whole.set_weights(model.get_weights())
    np.testing.assert_allclose(on[:, -1], whole.predict(longer, verbose=0)[:, 0], atol=1e-5)


def test_step_model_inputs_are_the_point_and_each_state():
    step = step_model(models.build("lstm", (8, 1), FORECAST, {"units": 3, "layers": 2}))
    assert [i.name for i in step.inputs] == ["point", "state_0", "state_1", "state_2", "state_3"]
    assert [tuple(o.shape) for o in step.outputs] == [(None, 1)] + [(None, 3)] * 4


@pytest.mark.parametrize("architecture, hyperparameters, message", [
    ("bi_gru", {"units": 4}, "bidirectional_0 .* cannot run one step at a time"),
    ("esn", {"units": 10, "representation": "mean"}, "representation .* cannot run one step"),
    ("mlp", {"hidden_units": [4]}, "no recurrent layer"),
])
def test_models_that_cannot_stream_say_which_layer(architecture, hyperparameters, message):
    shape = (8,) if architecture == "mlp" else (8, 1)
    with pytest.raises(ValueError, match=message):
        step_model(models.build(architecture, shape, FORECAST, hyperparameters))


def test_free_run_feeds_each_forecast_back_as_the_next_point():
    model = models.build("gru", (6, 1), FORECAST, {"units": 4, "masking": False})
    stepper = Stepper(step_model(model))
    start = RNG.standard_normal((2, 6, 1)).astype("float32")
    forecasts, states, _ = stepper.read(start)
    run = stepper.free_run(forecasts[:, -1], states, 4)
    # the same as reading the forecasts as points, one after the other
    fed, _, _ = stepper.read(run[:, :3, None], states)
    np.testing.assert_allclose(run[:, 1:], fed, atol=1e-6)
    np.testing.assert_array_equal(run[:, 0], forecasts[:, -1])


def continuous_params(**overrides) -> esn.EsnParams:
    return esn.EsnParams(**{"units": 40, "sr": 1.1, "lr": 0.5, "bias": 0.2, "ridge": 1e-6, "masking": False,
                            "regime": "continuous", "warmup": 20, **overrides})


def test_continuous_fit_drives_the_reservoir_once_and_leaves_out_warmup_and_validation():
    series = np.sin(np.arange(401) / 7).astype("float32")
    points, targets = series[:-1, None], series[1:]
    fitted = RNG.random(400) < 0.9
    params = continuous_params()
    model = models.build("esn", (10, 1), FORECAST, params)
    esn.fit(model, np.zeros((1, 10, 1)), np.zeros(1), params, stream=Stream(points, targets, fitted))
    states, _ = esn.harvest(model, points[None], masking=False)
    used = fitted & (np.arange(400) >= 20)
    ridge = Ridge(alpha=1e-6, solver="cholesky").fit(states[0][used].astype(np.float64), targets[used])
    kernel, bias = model.get_layer("outputs").get_weights()
    np.testing.assert_allclose(kernel[:, 0], ridge.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bias, [ridge.intercept_], atol=1e-5)
    # carried through the series, it forecasts the next point
    forecasts, _, _ = Stepper(step_model(model)).read(points[None])
    assert np.sqrt(np.mean((forecasts[0, 20:] - targets[20:]) ** 2)) < 1e-3


@pytest.mark.parametrize("overrides, stream, message", [
    ({}, None, "continuous' drives the reservoir through one series: forecasting"),
    ({"warmup": 400}, Stream(np.zeros((50, 1)), np.zeros(50), np.ones(50, bool)), "warmup 400 leaves none"),
])
def test_impossible_continuous_fits_are_refused(overrides, stream, message):
    params = continuous_params(**overrides)
    model = models.build("esn", (10, 1), FORECAST, params)
    with pytest.raises(ValueError, match=message):
        esn.fit(model, np.zeros((1, 10, 1)), np.zeros(1), params, stream=stream)


@pytest.mark.parametrize("hyperparameters, dataset, message", [
    ({"regime": "continuous"}, "japanese_vowels", r"hyperparameters: with these 'esn' does forecasting, "
                                                  r"not sequence_classification"),
    ({"regime": "continuous", "representation": "mean"}, "mackey_glass", "representation must be 'last'"),
])
def test_continuous_regime_is_refused_before_any_stage_where_it_cannot_run(hyperparameters, dataset, message):
    from pipelines import config
    from tests.conftest import tiny_params

    doc = tiny_params(("japanese_vowels", "mackey_glass"), e={
        "architecture": "esn", "dataset": dataset, "seed": 1, "hyperparameters": hyperparameters,
        "training": {"batch_size": 8}, "export": {"variants": ["float32"]}})
    with pytest.raises(config.ParamsError, match=message):
        config.validate(doc)
