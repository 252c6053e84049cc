"""The recurrent family: simple RNN, LSTM, GRU, bidirectional and deep forms, masking, TFLite."""

import keras
import numpy as np
import pytest

import models
from edge.runner import TFLiteModel
from pipelines import config
from pipelines.exporters import tflite
from pipelines.runtime import StageError
from tests.conftest import tiny_params

NAMES = ["simple_rnn", "lstm", "gru", "bi_simple_rnn", "bi_lstm", "bi_gru"]


def sequences(n=4, steps=12, features=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, steps, features)).astype("float32")


def test_every_cell_and_direction_is_registered():
    assert set(NAMES) <= set(models.names())
    assert set(models.get("bi_lstm").tasks) == {"sequence_classification", "forecasting",
                                                "sequence_regression", "sequence_tagging", "tree_classification"}


@pytest.mark.parametrize("name", ["lstm", "bi_gru"])
def test_per_step_head_gives_one_output_per_step(name):
    model = models.build(name, (7, 5), models.registry.Head(5, per_step=True), {"layers": 2})
    probabilities = model.predict(sequences()[:, :7], verbose=0)
    assert probabilities.shape == (4, 7, 5)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


def test_linear_head_regresses():
    model = models.build("gru", (9, 1), models.registry.Head(1, activation="linear"), {"masking": False})
    assert model.get_layer("outputs").get_config()["activation"] == "linear"
    assert model.output_shape == (None, 1)


@pytest.mark.parametrize("name", NAMES)
def test_builders_give_class_probabilities(name):
    model = models.build(name, (12, 5), 9, {"units": 8})
    probabilities = model.predict(sequences(), verbose=0)
    assert probabilities.shape == (4, 9)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "bi_gru", "simple_rnn"])
def test_masking_ignores_padded_steps(name):
    """A sequence padded with zero steps is classified as the unpadded sequence is."""
    padded_model = models.build(name, (12, 5), 3, {"units": 6, "layers": 2})
    short_model = models.build(name, (8, 5), 3, {"units": 6, "layers": 2})
    short_model.set_weights(padded_model.get_weights())
    x = sequences(steps=8)
    padded = np.concatenate([x, np.zeros((4, 4, 5), np.float32)], axis=1)
    np.testing.assert_allclose(padded_model.predict(padded, verbose=0), short_model.predict(x, verbose=0),
                               atol=1e-6)
    unmasked = models.build(name, (12, 5), 3, {"units": 6, "layers": 2, "masking": False})
    unmasked.set_weights(padded_model.get_weights())
    assert not np.allclose(unmasked.predict(padded, verbose=0), short_model.predict(x, verbose=0), atol=1e-6)


def test_bidirectional_concatenates_both_directions():
    model = models.build("bi_gru", (12, 5), 3, {"units": 7})
    (layer,) = [l for l in model.layers if isinstance(l, keras.layers.Bidirectional)]
    assert layer.output.shape == (None, 14)
    forward = models.build("gru", (12, 5), 3, {"units": 7})
    assert [l for l in forward.layers if isinstance(l, keras.layers.GRU)][0].output.shape == (None, 7)


def test_deep_form_stacks_sequences():
    model = models.build("lstm", (12, 5), 3, {"units": 4, "layers": 3, "dense_units": [5]})
    recurrent = [l for l in model.layers if isinstance(l, keras.layers.LSTM)]
    assert [l.return_sequences for l in recurrent] == [True, True, False]
    assert [tuple(l.output.shape) for l in recurrent] == [(None, 12, 4), (None, 12, 4), (None, 4)]


def test_hyperparameters_reach_the_layers():
    model = models.build("simple_rnn", (12, 5), 3, {"units": 4, "activation": "relu", "dropout_rate": 0.2,
                                                     "recurrent_dropout_rate": 0.1})
    (layer,) = [l for l in model.layers if isinstance(l, keras.layers.SimpleRNN)]
    assert layer.cell.activation is keras.activations.relu
    assert (layer.cell.dropout, layer.cell.recurrent_dropout) == (0.2, 0.1)
    with pytest.raises(ValueError, match="cells"):
        models.build("lstm", (12, 5), 3, {"cells": 4})


@pytest.mark.parametrize("name,layers", [("simple_rnn", 1), ("lstm", 2), ("gru", 1), ("bi_lstm", 2),
                                         ("bi_gru", 1), ("bi_simple_rnn", 1)])
def test_tflite_builtin_ops_and_parity(name, layers, tmp_path):
    """Fixed batch of 1, masked variable-length input: builtin ops only, float32 parity <= 1e-4."""
    model = models.build(name, (12, 5), 4, {"units": 8, "layers": layers})
    fixed = models.build(name, (12, 5), 4, {"units": 8, "layers": layers}, batch_size=1)
    fixed.set_weights(model.get_weights())
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite.convert(fixed, "float32"))
    runner = TFLiteModel(path)
    assert not tflite.flex_ops(runner)
    x = sequences(n=6)
    x[0, 7:] = 0.0                                   # a shorter, padded sequence
    diff = np.abs(runner.predict(x) - model.predict(x, verbose=0)).max()
    tflite.check_parity("float32", diff, 1e-4)
    assert diff <= 1e-4


def test_recurrent_architecture_on_images_is_a_params_error():
    doc = tiny_params()
    doc["experiments"]["mlp"]["architecture"] = "lstm"
    doc["experiments"]["mlp"]["hyperparameters"] = {"units": 8}
    with pytest.raises(config.ParamsError, match=r"experiments\.mlp\.architecture: 'lstm' does not do "
                                                 r"image_classification .*it does sequence_classification"):
        config.validate(doc)


def test_parity_check_rejects_a_wrong_model():
    with pytest.raises(StageError):
        tflite.check_parity("float32", 1e-2, 1e-4)
