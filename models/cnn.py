"""The convolutional neural network (course notes, unit 5).

Feature extraction by pairs of convolution and pooling layers, then fully
connected layers that classify the extracted features:

    conv:    z[i, j, k] = f(sum_{m, n, c} K_k[m, n, c] x[i + m, j + n, c] + b_k)   (M x M filter)
    pool:    p[i, j, k] = max_{(m, n) in window} z[s i + m, s j + n, k]
    dense:   y = softmax(W_o f(W_h flatten(p) + b_h) + b_o)

Dropout drops a fraction of units while training against overfitting.

Hyperparameters:
    filters:       output channels of each convolution block, input side first.
    kernel_size:   M, the side of each square filter.
    convs_per_block: convolutions before each pooling layer.
    pool_size:     side of the max-pooling window (and its stride).
    dense_units:   widths of the fully connected layers before the output.
    activation:    f for convolution and dense layers.
    dropout_rate:  dropout after each pooling block and each dense layer.
    batch_norm:    normalise each convolution's output before the activation.
"""

from __future__ import annotations

import keras
from keras import layers
from pydantic import Field

from models.registry import Head, Hyperparameters, register


class CNNParams(Hyperparameters):
    filters: list[int] = Field(default=[32, 64], min_length=1)
    kernel_size: int = Field(default=3, ge=1)
    convs_per_block: int = Field(default=1, ge=1)
    pool_size: int = Field(default=2, ge=1)
    dense_units: list[int] = [128]
    activation: str = "relu"
    dropout_rate: float = Field(default=0.25, ge=0.0, lt=1.0)
    batch_norm: bool = False


@register("cnn", hyperparameters=CNNParams, tasks=("image_classification",))
def build_cnn(inputs: keras.KerasTensor, head: Head, params: CNNParams) -> keras.Model:
    """Convolutional network: conv/pool blocks, dense layers, softmax output."""
    x = inputs
    for b, filters in enumerate(params.filters):
        for c in range(params.convs_per_block):
            x = layers.Conv2D(filters, params.kernel_size, padding="same",
                              use_bias=not params.batch_norm, name=f"conv_{b}_{c}")(x)
            if params.batch_norm:
                x = layers.BatchNormalization(name=f"batch_norm_{b}_{c}")(x)
            x = layers.Activation(params.activation, name=f"activation_{b}_{c}")(x)
        if min(x.shape[1], x.shape[2]) >= params.pool_size:
            x = layers.MaxPooling2D(params.pool_size, name=f"pool_{b}")(x)
        if params.dropout_rate:
            x = layers.Dropout(params.dropout_rate, name=f"dropout_block_{b}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(params.dense_units):
        x = layers.Dense(units, activation=params.activation, name=f"dense_{i}")(x)
        if params.dropout_rate:
            x = layers.Dropout(params.dropout_rate, name=f"dropout_dense_{i}")(x)
    outputs = head.layer()(x)
    return keras.Model(inputs, outputs, name="cnn")
