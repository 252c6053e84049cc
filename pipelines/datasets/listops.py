"""ListOps (Nangia & Bowman 2018), generated here: nested lists of operators over digits,
whose value needs the tree.

    [MAX 2 9 [MIN 4 7 ] 0 ]   ->   9

Operators: MIN, MAX, MED (the median; of an even count, the lower of the middle two) and SM
(the sum modulo 10), each over 2 to 5 arguments, an argument a digit 0-9 or another list.
The label is the value, 0-9. A tree's depth is its deepest nesting of lists (a list of
digits only has depth 1).

Generation, seeded: a tree of depth exactly d is a list of 2-5 arguments of which one (the
spine) is a tree of depth d-1 and each other one a tree of a depth drawn from 1..d-1 with
probability `BRANCH`, else a digit; the depths are drawn uniformly. The config `d<D>` holds
trees of depth 1..D in `train` and `test`, and of depth D+1..D+3 in `deep` (depth
extrapolation); trees over `MAX_TOKENS` tokens are drawn again, and no token string is in two
examples, within a split or across them (train first, then test, then deep).

An example carries both views of its tree:
- `tokens`: the token string (for sequence models), ids of `VOCABULARY`, padded with 0;
- the tree as fixed-size arrays, nodes in post-order (children before their parent) from
  index 1: `node_tokens` (a digit's or an operator's id), `children` (a node's child indices,
  in order, padded with 0) and `root` (the last node). Node 0 is the padding node, token 0
  and no children, which every padded child index points at: a model keeps its state zero;
- `depth` and `label`.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds

OPERATORS = ("MIN", "MAX", "MED", "SM")
DIGITS = 10
MAX_ARGS = 5
VOCABULARY = ("<pad>", *map(str, range(DIGITS)), *(f"[{op}" for op in OPERATORS), "]")
PAD, FIRST_DIGIT, FIRST_OPERATOR, CLOSE = 0, 1, 1 + DIGITS, len(VOCABULARY) - 1
BRANCH = 0.25          # the chance that a non-spine argument is a list rather than a digit
EXTRA_DEPTHS = 3       # `deep` holds depths D+1..D+3
MAX_TOKENS = 256
MAX_NODES = MAX_TOKENS   # a tree has fewer nodes than tokens (each list adds 2 tokens), and node 0 pads

Tree = int | tuple[str, list]


def generate(rng: np.random.Generator, depth: int) -> Tree:
    """A tree of depth exactly `depth` (>= 1)."""
    n = int(rng.integers(2, MAX_ARGS + 1))
    spine = int(rng.integers(n))
    args: list[Tree] = []
    for i in range(n):
        if depth > 1 and i == spine:
            args.append(generate(rng, depth - 1))
        elif depth > 1 and rng.random() < BRANCH:
            args.append(generate(rng, int(rng.integers(1, depth))))
        else:
            args.append(int(rng.integers(DIGITS)))
    return OPERATORS[int(rng.integers(len(OPERATORS)))], args


def value(tree: Tree) -> int:
    if isinstance(tree, int):
        return tree
    op, args = tree
    values = sorted(value(a) for a in args)
    if op == "MIN":
        return values[0]
    if op == "MAX":
        return values[-1]
    if op == "MED":
        return values[(len(values) - 1) // 2]
    return sum(values) % DIGITS


def depth(tree: Tree) -> int:
    return 0 if isinstance(tree, int) else 1 + max(depth(a) for a in tree[1])


def tokens(tree: Tree) -> list[int]:
    """The token string as ids of `VOCABULARY`."""
    if isinstance(tree, int):
        return [FIRST_DIGIT + tree]
    op, args = tree
    return [FIRST_OPERATOR + OPERATORS.index(op), *(t for a in args for t in tokens(a)), CLOSE]


def text(ids) -> str:
    return " ".join(VOCABULARY[i] for i in ids if i != PAD)


def nodes(tree: Tree) -> tuple[list[int], list[list[int]]]:
    """The post-order node tokens and child indices, from index 1 (0 is the padding node)."""
    node_tokens, children = [PAD], [[]]

    def visit(node: Tree) -> int:
        if isinstance(node, int):
            node_tokens.append(FIRST_DIGIT + node)
            children.append([])
        else:
            op, args = node
            kids = [visit(a) for a in args]
            node_tokens.append(FIRST_OPERATOR + OPERATORS.index(op))
            children.append(kids)
        return len(node_tokens) - 1

    visit(tree)
    return node_tokens, children


def example(tree: Tree) -> dict[str, np.ndarray | int]:
    """The feature dict of one tree, padded to `MAX_TOKENS` and `MAX_NODES`."""
    ids = tokens(tree)
    if len(ids) > MAX_TOKENS:
        raise ValueError(f"listops: a tree of {len(ids)} tokens, over MAX_TOKENS ({MAX_TOKENS})")
    node_tokens, children = nodes(tree)
    padded_tokens = np.zeros(MAX_TOKENS, np.int32)
    padded_tokens[:len(ids)] = ids
    padded_nodes = np.zeros(MAX_NODES, np.int32)
    padded_nodes[:len(node_tokens)] = node_tokens
    padded_children = np.zeros((MAX_NODES, MAX_ARGS), np.int32)
    for i, kids in enumerate(children):
        padded_children[i, :len(kids)] = kids
    return {"tokens": padded_tokens, "length": len(ids), "node_tokens": padded_nodes,
            "children": padded_children, "root": len(node_tokens) - 1, "depth": depth(tree),
            "label": value(tree)}


def draw(rng: np.random.Generator, depths: range, n: int, taken: set[str]) -> list[Tree]:
    """`n` trees of depths drawn uniformly from `depths`, none over `MAX_TOKENS` tokens and
    none whose token string is in `taken` (to which theirs are added)."""
    trees = []
    attempts = 0
    while len(trees) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"listops: cannot draw {n} distinct trees of depth {depths.start}..{depths.stop - 1}"
                             f" within {MAX_TOKENS} tokens (got {len(trees)})")
        tree = generate(rng, int(rng.choice(depths)))
        ids = tokens(tree)
        key = text(ids)
        if len(ids) > MAX_TOKENS or key in taken:
            continue
        taken.add(key)
        trees.append(tree)
    return trees


def majority_rate(labels) -> float:
    """The accuracy of always answering the most frequent label."""
    counts = np.bincount(np.asarray(labels), minlength=DIGITS)
    return float(counts.max() / counts.sum())


@dataclasses.dataclass
class DepthConfig(tfds.core.BuilderConfig):
    """ListOps with trees of depth up to `max_depth` (`d<D>`) and the split sizes."""

    max_depth: int = 5
    train_examples: int = 20_000
    test_examples: int = 2_000
    deep_examples: int = 1_500


def depth_config(config_name: str, default: DepthConfig) -> DepthConfig:
    """`d<D>` as a config, e.g. `d6`; the split sizes come from `default`."""
    match = re.fullmatch(r"d(\d+)", config_name)
    if not match or not 1 <= int(match.group(1)) <= 10:
        raise ValueError(f"config {config_name!r}: expected d<D> with 1 <= D <= 10, e.g. d5")
    return dataclasses.replace(default, name=config_name, max_depth=int(match.group(1)))


class ArchlabListops(tfds.core.GeneratorBasedBuilder):
    """ListOps: the value 0-9 of a nested list of MIN, MAX, MED and SM over digits."""

    ARCHLAB_TASK = "tree_classification"
    VOCABULARY = VOCABULARY   # the tokens by id
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Generated: depths 1..D in train and test, D+1..D+3 in deep."}
    BUILDER_CONFIGS = [DepthConfig(name="d5")]
    SEED = 0

    @classmethod
    def named_config(cls, name: str) -> DepthConfig:
        return depth_config(name, cls.BUILDER_CONFIGS[0])

    def _info(self) -> tfds.core.DatasetInfo:
        d = self.builder_config.max_depth
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"ListOps, trees of depth 1..{d} (train, test) and {d + 1}..{d + EXTRA_DEPTHS} "
                        "(deep): the token string and the tree in post-order arrays; label = its value.",
            features=tfds.features.FeaturesDict({
                "tokens": tfds.features.Tensor(shape=(MAX_TOKENS,), dtype=np.int32),
                "length": tfds.features.Scalar(dtype=np.int32),
                "node_tokens": tfds.features.Tensor(shape=(MAX_NODES,), dtype=np.int32),
                "children": tfds.features.Tensor(shape=(MAX_NODES, MAX_ARGS), dtype=np.int32),
                "root": tfds.features.Scalar(dtype=np.int32),
                "depth": tfds.features.Scalar(dtype=np.int32),
                "label": tfds.features.ClassLabel(num_classes=DIGITS),
            }),
            # both views as the input: a tree model reads the arrays, a sequence model the tokens
            supervised_keys=({"tokens": "tokens", "node_tokens": "node_tokens", "children": "children"}, "label"),
            homepage="https://arxiv.org/abs/1804.06028",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        rng = np.random.default_rng([self.SEED, config.max_depth])
        taken: set[str] = set()
        shallow = range(1, config.max_depth + 1)
        deep = range(config.max_depth + 1, config.max_depth + EXTRA_DEPTHS + 1)
        splits = {"train": draw(rng, shallow, config.train_examples, taken),
                  "test": draw(rng, shallow, config.test_examples, taken),
                  "deep": draw(rng, deep, config.deep_examples, taken)}
        return {split: self._generate_examples(trees) for split, trees in splits.items()}

    def _generate_examples(self, trees: list[Tree]):
        for i, tree in enumerate(trees):
            yield i, example(tree)
