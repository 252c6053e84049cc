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
its children's states of the round before, all with the same weights. The children are
read through the tree's adjacency, built once per tree from the child indices as one-hot
rows (`S`: row (v, k) picks v's k-th child; `A = sum_k S_k`: row v sums v's children), so a
round is matrix products: [h_c1; ...; h_cA] = S h, h~ = A h, sum_k f_vk * c_ck = A (f * c)
where f_k = sigmoid(W_f x_parent(k) + U_f h_k + b_f) is computed at each child (a child has
one parent). After round t every node of height < t is exact (a leaf after one round), so
`iterations` must exceed the deepest tree's depth; more rounds change nothing, so training
skips the rounds past its batch's deepest tree (each round behind a condition on the batch's
height, found in cheap maxima over the adjacency). The number of nodes N is free (batches are
cut to their largest tree); at inference the rounds are all unrolled in the graph, so the
model converts to TFLite with builtin ops only (ONE_HOT, BATCH_MATMUL, FULLY_CONNECTED, ...):
no while loop, no condition, no TensorList, no scatter.

Hyperparameters:
    vocabulary:     token ids 0..vocabulary-1 (0: padding); ListOps has 16.
    embedding_dim:  width of the token embedding x_v.
    units:          width of the node state h_v (and c_v).
    iterations:     rounds of composition, more than the deepest tree's depth (the deep
                    test trees' too: ListOps d5's `deep` split goes to depth 8).
    dense_units:    widths of dense layers between the root's h and the output.
    dropout_rate:   dropout on the root's h while training.
"""

from __future__ import annotations

import keras
from keras import layers, ops
from pydantic import Field

from models.registry import Head, Hyperparameters, register


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

    def call(self, nodes, training=None):
        tokens, children = nodes[..., 0], nodes[..., 1:]
        batch, count = ops.shape(nodes)[0], ops.shape(nodes)[1]
        dtype, n = self.compute_dtype, self.units
        present = ops.greater(tokens, 0)
        real = ops.expand_dims(ops.cast(present, dtype), -1)   # (B, N, 1): 0 on padding rows
        # S: (B, N, A, N), row (v, k) one-hot at v's k-th child; padded slots (index 0) all zero
        select = ops.one_hot(children, count, dtype=dtype) * ops.expand_dims(ops.cast(children > 0, dtype), -1)
        adjacency = ops.sum(select, axis=2)                                       # A: (B, N, N)
        x = ops.matmul(ops.take(ops.cast(self.embeddings, dtype), tokens, axis=0),
                       ops.cast(self.input_kernel, dtype)) + ops.cast(self.bias, dtype)
        u_kernel = ops.cast(self.child_kernel, dtype)
        h = ops.zeros((batch, count, n), dtype)
        if self.cell == "recursive":
            ordered = ops.reshape(select, (batch, count * self.slots, count))

            def compose(state):
                (h,) = state
                kids = ops.reshape(ops.matmul(ordered, h), (batch, count, self.slots * n))   # [h_c1; ...; h_cA]
                return (real * ops.tanh(x + ops.matmul(kids, u_kernel)),)

            state = (h,)
        else:
            forget_x = ops.matmul(ops.transpose(adjacency, (0, 2, 1)), x[..., 3 * n:])   # W_f x_parent(k) + b_f
            forget_kernel = ops.cast(self.forget_kernel, dtype)

            def compose(state):
                h, c = state
                iou = x[..., :3 * n] + ops.matmul(ops.matmul(adjacency, h), u_kernel)
                i, o, u = ops.sigmoid(iou[..., :n]), ops.sigmoid(iou[..., n:2 * n]), ops.tanh(iou[..., 2 * n:])
                f = ops.sigmoid(forget_x + ops.matmul(h, forget_kernel))            # f_k at each child k
                c = real * (i * u + ops.matmul(adjacency, f * c))
                return real * o * ops.tanh(c), c

            state = (h, h)
        # Training skips the rounds after the batch's deepest tree is exact (they change
        # nothing): the graph keeps every round, each behind a condition; inference, and so
        # TFLite, runs them all unconditionally.
        needed = self._rounds_needed(adjacency) if training else None
        for r in range(self.iterations):
            state = compose(state) if needed is None else \
                ops.cond(ops.less(r, needed), lambda state=state: compose(state), lambda state=state: state)
        h = state[0]
        # the root is the last node: row = the number of nodes
        root = ops.one_hot(ops.sum(ops.cast(present, "int32"), axis=1), count, dtype=dtype)
        return ops.sum(ops.expand_dims(root, -1) * h, axis=1)

    def _rounds_needed(self, adjacency):
        """The rounds after which every node of the batch is exact: its deepest tree's depth
        + 1 (a node's height is 1 + its highest child's, a leaf's 0; found in `iterations`
        rounds of integer-like maxima, far cheaper than a composition round)."""
        height = ops.zeros(ops.shape(adjacency)[:2], adjacency.dtype)
        for _ in range(self.iterations):
            height = ops.max(adjacency * (ops.expand_dims(height, 1) + 1), axis=-1)
        return ops.cast(ops.max(height), "int32") + 1

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


TASKS = ("tree_classification",)


@register("recursive_net", hyperparameters=RecursiveParams, tasks=TASKS, trees=True)
def build_recursive_net(inputs: keras.KerasTensor, head: Head, params: RecursiveParams) -> keras.Model:
    """Recursive network: h = tanh(W x + U [children's h] + b), composed bottom-up over a tree."""
    return _build(inputs, head, params, "recursive")


@register("tree_lstm", hyperparameters=RecursiveParams, tasks=TASKS, trees=True)
def build_tree_lstm(inputs: keras.KerasTensor, head: Head, params: RecursiveParams) -> keras.Model:
    """Child-sum Tree-LSTM (Tai et al. 2015) over a tree."""
    return _build(inputs, head, params, "tree_lstm")


class NodeCell(layers.Layer):
    """The composition of node `index` + 1 with a `TreeComposition`'s weights: what the tree's
    unfolded graph applies at every node (`unfold`). Called on (the node tokens (B, nodes),
    [children's h], [children's c]), returns (h, c); a leaf has no children (its h~ and sum of
    f * c are zero)."""

    def __init__(self, tree: TreeComposition, index: int, **kwargs):
        super().__init__(**kwargs)
        self.tree, self.index = tree, index

    def call(self, tokens, kids_h, kids_c):
        tree, n = self.tree, self.tree.units
        x = ops.matmul(ops.take(tree.embeddings, tokens[:, self.index], axis=0), tree.input_kernel) + tree.bias
        if tree.cell == "recursive":
            if not kids_h:
                return ops.tanh(x), x
            slots = [*kids_h, *[ops.zeros_like(kids_h[0])] * (tree.slots - len(kids_h))]
            h = ops.tanh(x + ops.matmul(ops.concatenate(slots, axis=-1), tree.child_kernel))
            return h, h
        iou = x[:, :3 * n] + (ops.matmul(sum(kids_h[1:], kids_h[0]), tree.child_kernel) if kids_h else 0)
        i, o, u = ops.sigmoid(iou[:, :n]), ops.sigmoid(iou[:, n:2 * n]), ops.tanh(iou[:, 2 * n:])
        c = i * u
        for h_k, c_k in zip(kids_h, kids_c):
            c = c + ops.sigmoid(x[:, 3 * n:] + ops.matmul(h_k, tree.forget_kernel)) * c_k
        return o * ops.tanh(c), c


def unfold(model: keras.Model, tree) -> keras.Model:
    """`model` (a recursive net or Tree-LSTM) unfolded over one tree: a graph with one
    application of the same composition per node, children before parents, then the layers
    after the tree's root (dense, output). Its input is the tree's node tokens (1, nodes)
    in post-order (node 0, the padding node, left out); `tree` is its (N, 1 + A) array."""
    layer = model.get_layer("tree")
    count = int((tree[:, 0] > 0).sum())
    tokens = keras.Input((count,), batch_size=1, dtype="int32", name="node_tokens")
    h, c = {}, {}
    for v in range(1, count + 1):   # post-order: every child is composed before its parent
        kids = [int(k) for k in tree[v, 1:] if k]
        cell = NodeCell(layer, v - 1, name=f"node{v}")   # one per node, all with the tree layer's weights
        h[v], c[v] = cell(tokens, [h[k] for k in kids], [c[k] for k in kids])
    x = h[count]
    for later in model.layers[model.layers.index(layer) + 1:]:
        x = later(x)
    return keras.Model(tokens, x, name=f"{model.name}_unfolded")
