"""Recurrent networks (course notes, unit 5): simple RNN, LSTM, GRU, bidirectional and deep.

Simple RNN, the hidden state carries the memory of the sequence:

    h_t = f(W_h h_{t-1} + W_x x_t + b)

LSTM, gates decide what the cell state c_t forgets, takes in and shows:

    f_t = σ(W_f x_t + U_f h_{t-1} + b_f)          forget gate
    i_t = σ(W_i x_t + U_i h_{t-1} + b_i)          input gate
    o_t = σ(W_o x_t + U_o h_{t-1} + b_o)          output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ tanh(W_c x_t + U_c h_{t-1} + b_c)
    h_t = o_t ⊙ tanh(c_t)

GRU, an update gate z_t and a reset gate r_t, no separate cell state:

    z_t = σ(W_z x_t + U_z h_{t-1} + b_z)
    r_t = σ(W_r x_t + U_r h_{t-1} + b_r)
    h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ tanh(W_h x_t + U_h (r_t ⊙ h_{t-1}) + b_h)

Bidirectional (`bi_<cell>`): a forward and a backward RNN over the same sequence, their
outputs concatenated at each step, h_t = [→h_t ; ←h_t]. Deep (`layers` > 1): each layer
feeds its whole output sequence to the next. The task sets the output: the last layer's
final state is classified, y = softmax(W_o h_T + b_o), or regressed, y = W_o h_T + b_o
(forecasting, the adding problem); for per-step tasks (the copy task) the last layer
returns its whole sequence and y_t = softmax(W_o h_t + b_o) at every step.

Hyperparameters:
    units:                  width of the hidden state h_t of each layer (each direction).
    layers:                 L, recurrent layers stacked.
    activation:             f of the simple RNN (LSTM and GRU keep tanh and σ).
    dropout_rate:           dropout on each layer's inputs x_t while training.
    recurrent_dropout_rate: dropout on the recurrent state h_{t-1} while training.
    masking:                skip padded steps (all features 0, or token id 0) of variable-length input.
    vocabulary:             token ids 0..vocabulary-1 (0: padding), for int32 token inputs (the
                            ListOps token strings), which an embedding of `embedding_dim` reads first.
    dense_units:            widths of dense layers between the last state and the output.
    unroll:                 unroll the time loop (short sequences; a TFLite fallback).
"""

from __future__ import annotations

import keras
from keras import layers
from pydantic import Field

from models.registry import Head, Hyperparameters, register

CELLS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}
TASKS = ("sequence_classification", "forecasting", "sequence_regression", "sequence_tagging",
         "tree_classification")


class RecurrentParams(Hyperparameters):
    units: int = Field(default=64, ge=1)
    layers: int = Field(default=1, ge=1)
    activation: str = "tanh"
    dropout_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    recurrent_dropout_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    masking: bool = True
    dense_units: list[int] = []
    unroll: bool = False
    vocabulary: int | None = Field(default=None, ge=2)
    embedding_dim: int = Field(default=32, ge=1)


def build_recurrent(inputs: keras.KerasTensor, head: Head, params: RecurrentParams, *,
                    cell: str, bidirectional: bool) -> keras.Model:
    """A stack of `cell` layers (optionally bidirectional), dense layers, the task's output."""
    if "int" in str(inputs.dtype):   # token ids: embedded, id 0 the padding
        if params.vocabulary is None:
            raise ValueError("token-id inputs need hyperparameters.vocabulary (the number of token ids)")
        x = layers.Embedding(params.vocabulary, params.embedding_dim, mask_zero=params.masking,
                             name="embedding")(inputs)
    else:
        x = layers.Masking(mask_value=0.0, name="masking")(inputs) if params.masking else inputs
    for i in range(params.layers):
        options = {"return_sequences": head.per_step or i < params.layers - 1, "dropout": params.dropout_rate,
                   "recurrent_dropout": params.recurrent_dropout_rate, "unroll": params.unroll}
        if cell == "simple_rnn":
            options["activation"] = params.activation
        recurrent = CELLS[cell](params.units, name=f"{cell}_{i}", **options)
        if bidirectional:
            recurrent = layers.Bidirectional(recurrent, merge_mode="concat", name=f"bidirectional_{i}")
        x = recurrent(x)
    for i, units in enumerate(params.dense_units):
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
    outputs = head.layer()(x)
    return keras.Model(inputs, outputs, name=("bi_" if bidirectional else "") + cell)


def _register(cell: str, bidirectional: bool) -> None:
    name = ("bi_" if bidirectional else "") + cell

    def build(inputs, head, params):
        return build_recurrent(inputs, head, params, cell=cell, bidirectional=bidirectional)

    build.__doc__ = f"{'Bidirectional ' if bidirectional else ''}{cell} network, `layers` deep."
    register(name, hyperparameters=RecurrentParams, tasks=TASKS)(build)


for _cell in CELLS:
    for _bidirectional in (False, True):
        _register(_cell, _bidirectional)
