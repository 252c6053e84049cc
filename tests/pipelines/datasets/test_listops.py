"""ListOps (`pipelines/datasets/listops.py`): the operators, the two views of a tree (token
string and post-order arrays) checked against evaluators written here, and the builder's
splits: depths, disjoint strings, the same bytes for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pipelines.datasets import listops
from pipelines.datasets.listops import ArchlabListops, DepthConfig


@pytest.mark.parametrize(("tree", "expected"), [
    (("MIN", [3, 1, 4]), 1), (("MAX", [3, 1, 4]), 4), (("SM", [7, 8, 9]), 4),
    (("MED", [5, 1, 9]), 5), (("MED", [8, 2, 6, 4]), 4),   # an even count: the lower middle
    (("MAX", [2, 9, ("MIN", [4, 7]), 0]), 9), (("SM", [("MED", [1, 2]), ("MAX", [3, 8]), 5]), 4)])
def test_the_operators(tree, expected):
    assert listops.value(tree) == expected


def value_of_tokens(ids: list[int]) -> int:
    """Evaluate a token string with a stack (not the tree it came from)."""
    stack: list[list] = []
    for i in ids:
        word = listops.VOCABULARY[i]
        if word.startswith("["):
            stack.append([word[1:]])
        elif word == "]":
            op, *args = stack.pop()
            result = listops.value((op, args))
            if not stack:
                return result
            stack[-1].append(result)
        else:
            stack[-1].append(int(word))
    raise AssertionError("unbalanced")


def _value_of_arrays(node_tokens, children, root) -> int:
    """Evaluate the post-order arrays in index order: every child before its parent."""
    values = {}
    for i in range(1, root + 1):
        word = listops.VOCABULARY[node_tokens[i]]
        kids = [c for c in children[i] if c]
        assert all(c < i for c in kids), "a child after its parent"
        values[i] = int(word) if not kids else listops.value((word[1:], [values[c] for c in kids]))
    return values[root]


def test_a_generated_tree_has_its_depth_and_both_views_give_its_value():
    rng = np.random.default_rng(3)
    for depth in range(1, 8):
        for tree in listops.draw(rng, range(depth, depth + 1), 50, set()):
            assert listops.depth(tree) == depth
            ex = listops.example(tree)
            ids = [int(i) for i in ex["tokens"][:ex["length"]]]
            assert not ex["tokens"][ex["length"]:].any()
            assert value_of_tokens(ids) == ex["label"] == listops.value(tree)
            assert _value_of_arrays(ex["node_tokens"], ex["children"], ex["root"]) == ex["label"]
            assert ex["node_tokens"][0] == 0 and not ex["children"][0].any()      # the padding node
            assert not ex["node_tokens"][ex["root"] + 1:].any()
            counts = [len([c for c in row if c]) for row in ex["children"][1:ex["root"] + 1]]
            assert all(n == 0 or 2 <= n <= listops.MAX_ARGS for n in counts)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    config = DepthConfig(name="d3", max_depth=3, train_examples=400, test_examples=150, deep_examples=100)
    builds = []
    for run in range(2):
        builder = ArchlabListops(config=config, data_dir=str(tmp_path_factory.mktemp(f"listops{run}")))
        builder.download_and_prepare()
        builds.append({split: list(tfds.as_numpy(builder.as_dataset(split=split)))
                       for split in ("train", "test", "deep")})
    return config, builds


def test_the_splits_hold_their_depths_distinct_strings_and_repeat_for_the_seed(built):
    config, (first, second) = built
    assert {s: len(v) for s, v in first.items()} == {"train": 400, "test": 150, "deep": 100}
    strings = {s: {listops.text(ex["tokens"]) for ex in v} for s, v in first.items()}
    assert sum(map(len, strings.values())) == 650            # distinct within and across the splits
    for split, depths in (("train", {1, 2, 3}), ("test", {1, 2, 3}), ("deep", {4, 5, 6})):
        assert {int(ex["depth"]) for ex in first[split]} == depths
    for split in first:
        for a, b in zip(first[split], second[split]):
            assert all(np.array_equal(a[k], b[k]) for k in a)
    labels = [int(ex["label"]) for ex in first["train"]]
    assert set(labels) == set(range(10)) and listops.majority_rate(labels) < 0.25


def test_a_depth_config_is_parsed_or_refused():
    assert listops.depth_config("d7", ArchlabListops.BUILDER_CONFIGS[0]).max_depth == 7
    with pytest.raises(ValueError, match="expected d<D>"):
        listops.depth_config("t5", ArchlabListops.BUILDER_CONFIGS[0])

