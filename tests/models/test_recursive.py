"""Recursive networks (`models/recursive.py`): the all-nodes rounds give what the equations
give composed node by node bottom-up (a NumPy recursion written here), padding changes
nothing, and the models convert to builtin-op TFLite with float32 parity."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from edge.runner import TFLiteModel
from models.recursive import RecursiveParams, build_recursive_net, build_tree_lstm
from models.registry import Head
from pipelines.datasets import listops
from pipelines.exporters import tflite

NODES = 48
BUILDERS = {"recursive": build_recursive_net, "tree_lstm": build_tree_lstm}


def trees(n: int, seed: int = 0, depths=range(1, 5)) -> np.ndarray:
    """`n` ListOps trees as the models' (N, 1 + A) arrays, N = `NODES`."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, NODES, 1 + listops.MAX_ARGS), np.int32)
    for i, tree in enumerate(t for t in listops.draw(rng, depths, 10 * n, set())
                             if len(listops.nodes(t)[0]) <= NODES):
        if i == n:
            break
        ex = listops.example(tree)
        out[i, :, 0], out[i, :, 1:] = ex["node_tokens"][:NODES], ex["children"][:NODES]
    assert out[:, 1, 0].all(), "too few small trees drawn"
    return out


def build(cell: str, params: RecursiveParams, batch_size: int | None = None) -> keras.Model:
    inputs = keras.Input((NODES, 1 + listops.MAX_ARGS), batch_size=batch_size, dtype="int32", name="inputs")
    return BUILDERS[cell](inputs, Head(10), params)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def reference_root_state(layer, tree: np.ndarray) -> np.ndarray:
    """The root's h composed node by node in post-order, straight from the docstring's equations."""
    emb, w, u, b = (np.asarray(v) for v in (layer.embeddings, layer.input_kernel, layer.child_kernel, layer.bias))
    n = layer.units
    h, c = {0: np.zeros(n)}, {0: np.zeros(n)}
    root = int((tree[:, 0] > 0).sum())
    for v in range(1, root + 1):
        x = emb[tree[v, 0]] @ w + b
        kids = list(tree[v, 1:])   # padded slots point at node 0, whose state is zero
        if layer.cell == "recursive":
            h[v] = np.tanh(x + np.concatenate([h[k] for k in kids]) @ u)
            continue
        iou = x[:3 * n] + sum(h[k] for k in kids) @ u
        i, o, g = sigmoid(iou[:n]), sigmoid(iou[n:2 * n]), np.tanh(iou[2 * n:])
        forget = np.asarray(layer.forget_kernel)
        c[v] = i * g + sum(sigmoid(x[3 * n:] + h[k] @ forget) * c[k] for k in kids if k)
        h[v] = o * np.tanh(c[v])
    return h[root]


@pytest.mark.parametrize("cell", ["recursive", "tree_lstm"])
def test_the_rounds_equal_the_bottom_up_recursion(cell):
    params = RecursiveParams(units=8, embedding_dim=6, iterations=5)
    model = build(cell, params)
    x = trees(6)
    states = keras.Model(model.inputs, model.get_layer("tree").output).predict(x, verbose=0)
    for tree, state in zip(x, states):
        np.testing.assert_allclose(state, reference_root_state(model.get_layer("tree"), tree), atol=1e-5)


@pytest.mark.parametrize("cell", ["recursive", "tree_lstm"])
def test_more_rounds_than_the_depth_change_nothing_and_fewer_do(cell):
    x = trees(6, depths=range(4, 5))   # depth 4: exact from 5 rounds
    outputs = {}
    for rounds in (4, 5, 9):
        model = build(cell, RecursiveParams(units=8, embedding_dim=6, iterations=rounds))
        keras.utils.set_random_seed(0)
        reference = build(cell, RecursiveParams(units=8, embedding_dim=6, iterations=5))
        model.set_weights(reference.get_weights())
        outputs[rounds] = model.predict(x, verbose=0)
    np.testing.assert_allclose(outputs[9], outputs[5], atol=1e-6)
    assert np.abs(outputs[4] - outputs[5]).max() > 1e-4


@pytest.mark.parametrize("cell", ["recursive", "tree_lstm"])
def test_tflite_builtin_ops_and_parity(cell, tmp_path):
    params = RecursiveParams(units=8, embedding_dim=6, iterations=5)
    model = build(cell, params)
    fixed = build(cell, params, batch_size=1)
    fixed.set_weights(model.get_weights())
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite.convert(fixed, "float32"))
    runner = TFLiteModel(path)
    assert not tflite.flex_ops(runner)
    assert not {"WHILE", "SCATTER_ND", "TENSOR_SCATTER_UPDATE"} & set(runner.op_names())
    x = trees(8, seed=1)
    diff = np.abs(runner.predict(x) - model.predict(x, verbose=0)).max()
    assert diff <= 1e-4


@pytest.mark.parametrize("cell", ["recursive", "tree_lstm"])
def test_a_saved_model_reloads_with_the_same_outputs(cell, tmp_path):
    model = build(cell, RecursiveParams(units=8, embedding_dim=6, iterations=5))
    model.save(tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")
    x = trees(4)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("cell", ["recursive", "tree_lstm"])
def test_training_skips_only_rounds_that_change_nothing(cell):
    model = build(cell, RecursiveParams(units=8, embedding_dim=6, iterations=9))
    layer = model.get_layer("tree")
    x = trees(6, depths=range(1, 3))   # depth <= 2: exact after 3 of the 9 rounds
    np.testing.assert_allclose(layer(tf.constant(x), training=True), layer(tf.constant(x), training=False),
                               atol=1e-6)
    assert int(layer._rounds_needed(keras.ops.sum(keras.ops.one_hot(x[..., 1:], NODES) *
                                                  (x[..., 1:, None] > 0), axis=2))) == 3
    with tf.GradientTape() as tape:   # the skipped rounds leave the gradients as the full ones
        skipping = keras.ops.sum(layer(tf.constant(x), training=True) ** 2)
    fast = tape.gradient(skipping, layer.trainable_variables)
    with tf.GradientTape() as tape:
        full = keras.ops.sum(layer(tf.constant(x), training=False) ** 2)
    for a, b in zip(fast, tape.gradient(full, layer.trainable_variables)):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), atol=1e-5)
