"""Unfolded computational graphs (`pipelines/unfold.py`): an unrolled recurrent model computes
what the rolled one does, its TFLite graph grows by one cell per step and every step reads the
same weight tensors; a tree net unfolded over a tree computes what the tree model does; the
stage draws them from trained experiments."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import models
from edge.runner import StepModel
from models.recursive import RecursiveParams
from models.recursive import unfold as unfold_tree
from models.registry import Head
from pipelines import config, paths, train, unfold
from pipelines.exporters import tflite
from tests.conftest import prepare_small_listops
from tests.models.test_recursive import trees

FEATURES = 3


def copies(cell: str, steps: int) -> tuple[keras.Model, keras.Model]:
    keras.utils.set_random_seed(1)
    hyperparameters = {"units": 5, "masking": False}
    rolled = models.build(cell, (steps, FEATURES), 4, hyperparameters, batch_size=1)
    unrolled = models.build(cell, (steps, FEATURES), 4, {**hyperparameters, "unroll": True}, batch_size=1)
    unrolled.set_weights(rolled.get_weights())
    return rolled, unrolled


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_the_unrolled_model_computes_what_the_rolled_one_does(cell, tmp_path):
    rolled, unrolled = copies(cell, 6)
    x = np.random.default_rng(0).standard_normal((8, 6, FEATURES)).astype(np.float32)
    expected = rolled.predict(x, verbose=0)
    np.testing.assert_allclose(unrolled.predict(x, verbose=0), expected, atol=1e-5)
    path = tmp_path / "unrolled.tflite"
    path.write_bytes(tflite.convert(unrolled, "float32"))
    edge = StepModel(path)
    (name,) = edge.inputs
    np.testing.assert_allclose(np.concatenate([edge(**{name: s[None]})[0] for s in x]), expected, atol=1e-5)


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_the_unrolled_graph_grows_by_one_cell_per_step_and_the_rolled_one_not_at_all(cell):
    counts, rolled_counts, weights = [], set(), set()
    for steps in range(2, 5):
        rolled, unrolled = copies(cell, steps)
        graph = unfold.read_graph(tflite.convert(unrolled, "float32"))
        assert len(graph) == 1 and "WHILE" not in {op for op, _, _ in graph[0].operators}
        counts.append(unfold.operator_count(graph))
        weights.add(len(graph[0].readers()))   # the same weight tensors whatever T
        rolled_graph = unfold.read_graph(tflite.convert(rolled, "float32"))
        assert "WHILE" in {op for op, _, _ in rolled_graph[0].operators} and len(rolled_graph) == 3   # + cond, body
        rolled_counts.add(unfold.operator_count(rolled_graph))
    steps = np.diff(counts)
    assert len(set(steps)) == 1 and steps[0] > 0, counts   # linear in T
    assert len(rolled_counts) == 1 and len(weights) == 1


def test_every_step_reads_the_same_weight_tensors():
    steps = 5
    _, unrolled = copies("simple_rnn", steps)
    graph = unfold.read_graph(tflite.convert(unrolled, "float32"))[0]
    readers = graph.readers()
    shapes = {graph.tensors[t].shape: n for t, n in readers.items()}
    # W_x at every step, U at every step after the first (h_0 = 0 drops its product), the output layer once
    assert shapes[(5, FEATURES)] == steps
    assert shapes[(5, 5)] == steps - 1
    assert shapes[(4, 5)] == 1
    fully_connected = [inputs for op, inputs, _ in graph.operators if op == "FULLY_CONNECTED"]
    assert len(fully_connected) == steps + (steps - 1) + 1


@pytest.mark.parametrize("cell", ["tree_lstm", "recursive_net"])
def test_a_tree_net_unfolded_over_a_tree_computes_the_tree_model_with_one_set_of_weights(cell, tmp_path):
    model = models.get(cell).build(keras.Input((48, 6), dtype="int32"), Head(10),
                                   RecursiveParams(units=6, embedding_dim=4, iterations=6))
    for tree in trees(3, seed=2):
        count = int((tree[:, 0] > 0).sum())
        unfolded = unfold_tree(model, tree)
        tokens = tree[None, 1:count + 1, 0]
        expected = model.predict(tree[None], verbose=0)
        np.testing.assert_allclose(unfolded.predict(tokens, verbose=0), expected, atol=1e-5)
        path = tmp_path / "tree.tflite"
        path.write_bytes(tflite.convert(unfolded, "float32"))
        edge = StepModel(path)
        np.testing.assert_allclose(edge(node_tokens=tokens)[0], expected, atol=1e-5)
        graph = unfold.read_graph(path.read_bytes())[0]
        embeddings = next(t for t, tensor in enumerate(graph.tensors) if tensor.shape == (16, 4))
        assert graph.readers()[embeddings] == count   # every node reads the one embedding table


def test_unfold_checks_its_experiments():
    doc = {"datasets": ["digits"], "experiments": {"mlp": {
        "architecture": "mlp", "dataset": "digits", "seed": 1, "training": {"epochs": 1, "batch_size": 8,
                                                                             "learning_rate": 0.1},
        "export": {}}}, "unfold": {"recurrent": "mlp", "tree": "nope"}}
    with pytest.raises(config.ParamsError, match="unfold.recurrent: 'mlp' is mlp, not a recurrent architecture"):
        config.validate(doc)


def test_the_stage_draws_the_graphs_of_trained_experiments(workspace, tfds_dir, monkeypatch):
    prepare_small_listops(tfds_dir.parent / "unfold_tfds" / "listops")
    (tfds_dir.parent / "unfold_tfds" / "japanese_vowels").symlink_to(tfds_dir / "japanese_vowels")
    monkeypatch.setattr(paths, "TFDS_DIR", tfds_dir.parent / "unfold_tfds")
    monkeypatch.setattr(paths, "UNFOLD", workspace / "unfold")
    few = {"epochs": 1, "batch_size": 16, "learning_rate": 0.01}
    params = config.validate({"datasets": ["japanese_vowels", "listops"], "experiments": {
        "rnn": {"architecture": "simple_rnn", "dataset": "japanese_vowels", "seed": 1,
                "hyperparameters": {"units": 6}, "training": few, "export": {}},
        "tree": {"architecture": "tree_lstm", "dataset": "listops", "seed": 1,
                 "hyperparameters": {"units": 6, "iterations": 9}, "training": few,
                 "export": {"variants": ["float32"]}}},
        "unfold": {"recurrent": "rnn", "tree": "tree", "steps": 4}})
    train.train("rnn", params)
    train.train("tree", params)
    metrics = unfold.unfold(params)
    rec, tree = metrics["recurrent"], metrics["tree"]
    assert rec["keras_max_abs_diff"] <= 1e-5 and rec["tflite_unrolled_max_abs_diff"] <= 1e-5
    counts = list(rec["unrolled_operators_by_steps"].values())
    assert counts[3] - counts[2] == counts[2] - counts[1] > 0   # linear from T = 2 (h_0 = 0 folds away at T = 1)
    assert tree["depth"] == 2 and tree["nodes"] <= 10
    assert tree["keras_max_abs_diff"] <= 1e-5 and tree["tflite_max_abs_diff"] <= 1e-5
    for figure in paths.UNFOLD_FIGURES:
        assert (workspace / "unfold" / figure).stat().st_size > 5000
    assert json.loads((workspace / "unfold" / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert "digraph" in (workspace / "unfold" / "files" / "unrolled.dot").read_text()
