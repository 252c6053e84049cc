"""The artificial neural network / multilayer perceptron (course notes, unit 5).

Each neuron takes a weighted sum of its inputs plus a bias and applies an
activation; layers are stacked input → hidden → output:

    h_1 = f(W_1 x + b_1),  h_l = f(W_l h_{l-1} + b_l),  y = softmax(W_o h_L + b_o)

Hyperparameters:
    hidden_units:  width of each hidden layer, input side first (e.g. [256, 128, 100],
                   the Fashion-MNIST benchmark's MLP).
    activation:    f, any Keras activation name (relu, tanh, sigmoid, ...).
    dropout_rate:  fraction of each hidden layer's units dropped while training (0 disables).
    batch_norm:    normalise each hidden layer's pre-activation.
"""

from __future__ import annotations

import keras
from keras import layers
from pydantic import Field

from models.registry import Head, Hyperparameters, register


class MLPParams(Hyperparameters):
    hidden_units: list[int] = Field(default=[256, 128, 100], min_length=1)
    activation: str = "relu"
    dropout_rate: float = Field(default=0.2, ge=0.0, lt=1.0)
    batch_norm: bool = False


@register("mlp", hyperparameters=MLPParams, tasks=("image_classification",))
def build_mlp(inputs: keras.KerasTensor, head: Head, params: MLPParams) -> keras.Model:
    """Multilayer perceptron: flatten, dense hidden layers, softmax output."""
    x = layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(params.hidden_units):
        x = layers.Dense(units, use_bias=not params.batch_norm, name=f"dense_{i}")(x)
        if params.batch_norm:
            x = layers.BatchNormalization(name=f"batch_norm_{i}")(x)
        x = layers.Activation(params.activation, name=f"activation_{i}")(x)
        if params.dropout_rate:
            x = layers.Dropout(params.dropout_rate, name=f"dropout_{i}")(x)
    outputs = head.layer()(x)
    return keras.Model(inputs, outputs, name="mlp")
