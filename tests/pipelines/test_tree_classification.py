"""The tree task (`pipelines/tasks/tree_classification.py`) on a small ListOps: each
architecture gets its view of the trees, batches group similar lengths, and the stages train,
score by depth and export tree models and sequence models alike; the edge runner classifies
trees from a `.npz` as Keras does."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import models
from pipelines import config, datasets, evaluate, export, paths, tasks, train
from pipelines.datasets import listops
from pipelines.schema import ParamsError
from tests.conftest import prepare_small_listops
from tests.pipelines.datasets.test_listops import value_of_tokens

TREE = {"units": 8, "embedding_dim": 8, "iterations": 9}
TRAINING = {"epochs": 2, "batch_size": 32, "learning_rate": 0.01}
EXPORT = {"variants": ["float32", "dynamic_range"], "latency_runs": 3, "parity_examples": 60}


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("listops")
    prepare_small_listops(root / "listops")
    return root


@pytest.fixture
def splits(listops_dir):
    return datasets.load("listops", 10, data_dir=listops_dir / "listops")


def experiment(architecture: str, hyperparameters: dict, **overrides) -> dict:
    return {"architecture": architecture, "dataset": "listops", "seed": 3, "hyperparameters": hyperparameters,
            "training": TRAINING, "export": EXPORT, **overrides}


def test_tree_models_read_the_node_arrays_and_the_others_the_tokens(splits):
    tree_task, token_task = tasks.get("tree_classification", "tree_lstm"), tasks.get("tree_classification", "lstm")
    assert (tree_task.trees, token_task.trees) == (True, False)
    assert tree_task.input_shape(splits) == (None, 1 + listops.MAX_ARGS)
    assert tree_task.export_shape(splits) == (listops.MAX_NODES, 1 + listops.MAX_ARGS)
    assert token_task.export_shape(splits) == (listops.MAX_TOKENS,)
    example = next(iter(splits.builder.as_dataset(split="test", shuffle_files=False)))
    inputs = {k: example[k] for k in ("tokens", "node_tokens", "children")}
    nodes, label = tree_task.preprocess(inputs, example["label"])
    tokens, _ = token_task.preprocess(inputs, example["label"])
    root = int(example["root"])
    assert nodes.shape == (root + 1, 1 + listops.MAX_ARGS)   # node 0, then every node up to the root
    np.testing.assert_array_equal(nodes[:, 0], example["node_tokens"][:root + 1])
    np.testing.assert_array_equal(nodes[:, 1:], example["children"][:root + 1])
    np.testing.assert_array_equal(tokens, example["tokens"][:int(example["length"])])
    assert int(label) == value_of_tokens(list(tokens.numpy()))


def test_batches_group_trees_of_similar_size_and_hold_each_example_once_per_pass(splits):
    task = tasks.get("tree_classification", "tree_lstm")
    widths, labels = [], []
    for x, y in task.batches(splits.test, 16).as_numpy_iterator():
        sizes = np.count_nonzero(x[..., 0], axis=1) + 1
        assert sizes.max() == x.shape[1]             # cut to the batch's largest tree
        widths.append(x.shape[1])
        labels.append(y)
        assert len(np.unique(np.searchsorted(tree_buckets(), sizes, side="right"))) == 1   # one bucket
    assert sorted(np.concatenate(labels)) == sorted(task.arrays(splits.test)[1])
    assert len(set(widths)) > 2


def tree_buckets():
    from pipelines.tasks.tree_classification import BUCKETS

    return np.asarray(BUCKETS)


def test_arrays_pad_to_the_longest_and_predict_cuts_batches_without_changing_outputs(splits):
    task = tasks.get("tree_classification", "tree_lstm")
    x, y = task.arrays(splits.test)
    assert x.shape == (60, (np.count_nonzero(x[..., 0], axis=1) + 1).max(), 1 + listops.MAX_ARGS)
    model = models.build("tree_lstm", task.input_shape(splits), task.head(splits), TREE, dtype="int32")
    np.testing.assert_allclose(task.predict(model, x), model.predict(x, verbose=0), atol=1e-5)
    padded = np.pad(x, [(0, 0), (0, 7), (0, 0)])   # more padding nodes change nothing
    np.testing.assert_allclose(task.predict(model, padded), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize(("architecture", "hyperparameters"), [
    ("tree_lstm", TREE), ("bi_lstm", {"units": 8, "vocabulary": 16})])
def test_train_evaluate_export_score_by_depth_and_the_edge_runner_agrees(workspace, listops_dir, monkeypatch,
                                                                         tmp_path, architecture, hyperparameters):
    monkeypatch.setattr(paths, "TFDS_DIR", listops_dir)
    params = config.validate({"datasets": ["listops"], "experiments": {"tree": experiment(architecture,
                                                                                          hyperparameters)}})
    train.train("tree", params)
    metrics = evaluate.evaluate("tree", params)
    depths = {f"depth_{d}_accuracy" for d in range(1, 9)}   # 1-5 in test, 6-8 in deep
    assert depths | {"test_accuracy", "deep_accuracy", "baseline_accuracy"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in depths)
    assert 0.05 < metrics["baseline_accuracy"] < 0.4
    assert (paths.eval_dir("tree") / "plots" / "accuracy_by_depth.png").stat().st_size > 1000
    exported = export.export("tree", params)
    assert exported["tflite_float32_max_abs_diff"] <= 1e-4
    assert exported["tflite_float32_accuracy_delta"] == 0
    assert exported["parity_examples"] == 60

    # the edge runner: trees from a .npz (a tree model) or token ids from a .npy (a sequence model)
    test = list(datasets.builder("listops", listops_dir / "listops").as_dataset(
        split="test", shuffle_files=False).as_numpy_iterator())
    if architecture == "tree_lstm":
        np.savez(tmp_path / "inputs.npz", node_tokens=np.stack([e["node_tokens"] for e in test]),
                 children=np.stack([e["children"] for e in test]))
        command = ["tree", str(paths.export_dir("tree") / "tflite" / "float32.tflite"), str(tmp_path / "inputs.npz")]
    else:
        np.save(tmp_path / "inputs.npy", np.stack([e["tokens"] for e in test]))
        command = [str(paths.export_dir("tree") / "tflite" / "float32.tflite"), str(tmp_path / "inputs.npy")]
    run = subprocess.run([sys.executable, "edge/runner.py", *command], capture_output=True, text=True,
                         cwd=paths.ROOT, check=True)
    model = keras.models.load_model(paths.train_dir("tree") / "model.keras")
    task = tasks.get("tree_classification", architecture)
    x, _ = task.arrays(datasets.load("listops", 10, listops_dir / "listops").test)
    assert run.stdout.split() == [str(i) for i in task.predict(model, x).argmax(axis=1)]
    assert len(run.stdout.split()) == 60


def test_the_edge_runner_refuses_a_tree_larger_than_the_model_takes(tmp_path):
    sys.path.insert(0, str(paths.ROOT / "edge"))
    from runner import tree_arrays

    tokens = np.zeros((1, 12), np.int32)
    tokens[0, 1:12] = 3
    with pytest.raises(ValueError, match="more than 9 nodes"):
        tree_arrays({"node_tokens": tokens, "children": np.zeros((1, 12, 5), np.int32)}, (10, 6))
    with pytest.raises(ValueError, match="has no children"):
        tree_arrays({"node_tokens": tokens}, (10, 6))


def test_a_sequence_model_of_the_tokens_needs_the_vocabulary_and_none_exports_int8():
    with pytest.raises(ParamsError, match="vocabulary"):
        config.validate({"datasets": ["listops"], "experiments": {"t": experiment("lstm", {"units": 8})}})
    with pytest.raises(ParamsError, match="token-id inputs.*list float32, dynamic_range, float16"):
        config.validate({"datasets": ["listops"], "experiments": {"t": experiment(
            "tree_lstm", TREE, export={"variants": ["float32", "int8"]})}})
    with pytest.raises(ParamsError, match="does not do tree_classification"):
        config.validate({"datasets": ["listops"], "experiments": {"t": experiment("mlp", {})}})


def test_listops_configs_by_name():
    assert datasets.builder("listops").builder_config.max_depth == 5
    assert datasets.builder("listops/d7").builder_config.max_depth == 7
    with pytest.raises(ValueError, match="expected d<D>"):
        datasets.check_name("listops/deep")
    with pytest.raises(ValueError, match=r"listops\[/d<D>\]"):
        datasets.check_name("listop")


def test_the_recurrent_builders_embed_token_ids():
    model = models.build("lstm", (None,), 10, {"units": 4, "vocabulary": 16, "embedding_dim": 3}, dtype="int32")
    assert model.get_layer("embedding").input_dim == 16
    x = np.array([[11, 2, 3, 15, 0, 0], [12, 5, 15, 0, 0, 0]], np.int32)
    short = model.predict(x[:, :4], verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), short, atol=1e-6)   # padding is masked
    assert np.abs(short[0] - short[1]).max() > 1e-6
    with pytest.raises(ValueError, match="vocabulary"):
        models.build("lstm", (None,), 10, {"units": 4}, dtype="int32")


def test_the_report_lays_accuracy_by_depth_side_by_side(tmp_path, monkeypatch):
    from pipelines import report

    monkeypatch.setattr(paths, "EXPERIMENTS", tmp_path / "experiments")
    params = config.validate({"datasets": ["listops", "digits"], "experiments": {
        "tree": experiment("tree_lstm", TREE), "seq": experiment("lstm", {"units": 8, "vocabulary": 16}),
        "mlp": {"architecture": "mlp", "dataset": "digits", "seed": 1, "export": {},
                "training": {"epochs": 1, "batch_size": 8, "learning_rate": 0.1}}}})
    scores = {"tree": [0.9, 0.8, 0.7], "seq": [0.8, 0.5, 0.3], "mlp": None}
    for name, by_depth in scores.items():
        paths.eval_dir(name).mkdir(parents=True)
        metrics = {"test_accuracy": 0.5, **{f"depth_{d}_accuracy": a for d, a in enumerate(by_depth or [], 1)}}
        (paths.eval_dir(name) / "metrics.json").write_text(json.dumps(metrics))
    text = report.depth_section(params, tmp_path)
    assert "### tree_classification/listops" in text and "mlp" not in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "0.9000" in rows["tree"] and "0.3000" in rows["seq"]
    assert "depth 3" in text.splitlines()[text.splitlines().index("### tree_classification/listops") + 2]
    assert (tmp_path / report.DEPTH_FIGURE).stat().st_size > 5000
