"""Recursive networks: one composition function applied over the nodes of a tree, bottom-up,
instead of over the steps of a chain (the course unit's "recursive nets").

A tree arrives as one int32 array of shape (N, 1 + A): row v is node v, in post-order
(children before their parent) from row 1, column 0 its token (a leaf's symbol or an inner
node's operator; 0 for padding), columns 1..A its children's row indices in order (0 where
it has fewer). Row 0 is the padding node: its state is kept zero, so a padded child adds
nothing. The root is the last node (row = the number of nodes).

Plain recursive network (N-ary, ordered children, A = 5 slots):

    h_v = tanh(W x_v + U [h_c1; ...; h_cA] + b)

where x_v is the embedding of v's token and [;] concatenates. Child-sum Tree-LSTM (Tai,
Socher & Manning 2015), for order-free composition (ListOps' operators all are):

    h~_v = sum_k h_ck
    i_v = sigmoid(W_i x_v + U_i h~_v + b_i),  o_v = sigmoid(W_o x_v + U_o h~_v + b_o)
    u_v = tanh(W_u x_v + U_u h~_v + b_u)
    f_vk = sigmoid(W_f x_v + U_f h_ck + b_f)          (one forget gate per child)
    c_v = i_v * u_v + sum_k f_vk * c_ck,              h_v = o_v * tanh(c_v)

Evaluation without a loop over the tree: `iterations` rounds each recompute every node from
its children's states of the round before (gather, then compose), all with the same
weights. After round t every node of height < t is exact (a leaf after one round), so
`iterations` must exceed the deepest tree's depth; more rounds change nothing. The rounds
are unrolled in the graph, so the model converts to TFLite with builtin ops only (GATHER,
FULLY_CONNECTED, ...): no while loop, no TensorList, no scatter.
"""

from __future__ import annotations

import keras
from keras import layers, ops
from pydantic import Field

from models.registry import Head, Hyperparameters


class RecursiveParams(Hyperparameters):
    vocabulary: int = Field(default=16, ge=2)          # token ids 0..vocabulary-1 (0: padding)
    embedding_dim: int = Field(default=32, ge=1)
    units: int = Field(default=64, ge=1)
    iterations: int = Field(default=9, ge=1, le=64)    # > the deepest tree's depth
    dense_units: list[int] = Field(default_factory=list)
    dropout_rate: float = Field(default=0.0, ge=0.0, lt=1.0)


@keras.saving.register_keras_serializable(package="archlab")
class TreeComposition(layers.Layer):
    """The tree's root state after `iterations` rounds of a composition over all nodes."""

    def __init__(self, units: int, vocabulary: int, embedding_dim: int, iterations: int,
                 cell: str = "recursive", **kwargs):
        super().__init__(**kwargs)
        if cell not in ("recursive", "tree_lstm"):
            raise ValueError(f"cell {cell!r}: expected recursive or tree_lstm")
        self.units, self.vocabulary, self.embedding_dim = units, vocabulary, embedding_dim
        self.iterations, self.cell = iterations, cell

    def build(self, input_shape):
        self.slots = input_shape[-1] - 1
        gates = 1 if self.cell == "recursive" else 4     # tree_lstm: i, o, u and f
        self.embeddings = self.add_weight(name="embeddings", shape=(self.vocabulary, self.embedding_dim),
                                          initializer="uniform")
        self.input_kernel = self.add_weight(name="input_kernel", shape=(self.embedding_dim, gates * self.units),
                                            initializer="glorot_uniform")
        # recursive: U over the concatenated children; tree_lstm: U_i, U_o, U_u over their sum
        shape = (self.slots * self.units, self.units) if self.cell == "recursive" else (self.units, 3 * self.units)
        self.child_kernel = self.add_weight(name="child_kernel", shape=shape, initializer="glorot_uniform")
        if self.cell == "tree_lstm":
            self.forget_kernel = self.add_weight(name="forget_kernel", shape=(self.units, self.units),
                                                 initializer="orthogonal")
        self.bias = self.add_weight(name="bias", shape=(gates * self.units,), initializer="zeros")

    def call(self, nodes):
        tokens, children = nodes[..., 0], nodes[..., 1:]
        batch, count = ops.shape(nodes)[0], nodes.shape[1]
        present = ops.greater(tokens, 0)
        real = ops.expand_dims(ops.cast(present, self.compute_dtype), -1)   # (B, N, 1)
        first = ops.arange(batch, dtype="int32") * count   # each tree's first row in the flattened (B * N) rows
        rows = ops.reshape(children + ops.reshape(first, (-1, 1, 1)), (-1,))
        x = ops.matmul(ops.take(ops.cast(self.embeddings, self.compute_dtype), tokens, axis=0),
                       ops.cast(self.input_kernel, self.compute_dtype)) + ops.cast(self.bias, self.compute_dtype)
        u_kernel = ops.cast(self.child_kernel, self.compute_dtype)
        h = ops.zeros((batch, count, self.units), self.compute_dtype)
        c = h

        def gathered(state):   # (B, N, A, units): each node's children's states
            flat = ops.take(ops.reshape(state, (-1, self.units)), rows, axis=0)
            return ops.reshape(flat, (batch, count, self.slots, self.units))

        for _ in range(self.iterations):
            kids = gathered(h)
            if self.cell == "recursive":
                h = real * ops.tanh(x + ops.matmul(ops.reshape(kids, (batch, count, self.slots * self.units)),
                                                   u_kernel))
                continue
            n = self.units
            iou = x[..., :3 * n] + ops.matmul(ops.sum(kids, axis=2), u_kernel)
            i, o, u = ops.sigmoid(iou[..., :n]), ops.sigmoid(iou[..., n:2 * n]), ops.tanh(iou[..., 2 * n:])
            # U_f h_ck for every child k: U_f applied once per node, then gathered (A times less work)
            f = ops.sigmoid(ops.expand_dims(x[..., 3 * n:], 2)
                            + gathered(ops.matmul(h, ops.cast(self.forget_kernel, self.compute_dtype))))
            c = real * (i * u + ops.sum(f * gathered(c), axis=2))
            h = real * o * ops.tanh(c)
        roots = first + ops.sum(ops.cast(present, "int32"), axis=1)   # the root is the last node
        return ops.take(ops.reshape(h, (-1, self.units)), roots, axis=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "vocabulary": self.vocabulary,
                "embedding_dim": self.embedding_dim, "iterations": self.iterations, "cell": self.cell}


def _build(inputs: keras.KerasTensor, head: Head, params: RecursiveParams, cell: str) -> keras.Model:
    x = TreeComposition(params.units, params.vocabulary, params.embedding_dim, params.iterations, cell,
                        name="tree")(inputs)
    for i, units in enumerate(params.dense_units):
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
    if params.dropout_rate:
        x = layers.Dropout(params.dropout_rate, name="dropout")(x)
    return keras.Model(inputs, head.layer()(x), name=cell)


def build_recursive_net(inputs: keras.KerasTensor, head: Head, params: RecursiveParams) -> keras.Model:
    """Recursive network: h = tanh(W x + U [children's h] + b), composed bottom-up over a tree."""
    return _build(inputs, head, params, "recursive")


def build_tree_lstm(inputs: keras.KerasTensor, head: Head, params: RecursiveParams) -> keras.Model:
    """Child-sum Tree-LSTM (Tai et al. 2015) over a tree."""
    return _build(inputs, head, params, "tree_lstm")
