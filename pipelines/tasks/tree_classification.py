"""Tree classification: a tree -> class (ListOps: the value 0-9 of nested list operations);
`test_accuracy`, for tree models and sequence models on the same test trees.

An example's input holds both views of its tree (the dataset's supervised keys): the node
arrays `node_tokens` (N,) and `children` (N, A), in post-order, and the token string
`tokens` (L,), each zero-padded. An architecture that reads trees (`Architecture.trees`:
`models/recursive.py`) gets the nodes as one (N, 1 + A) array; any other (an LSTM) gets the
tokens. Either is cut to its example's length and the batches group examples of similar
length (`tf.data` bucketing), so a batch of small trees costs what small trees cost; the
exported files take the dataset's full length (shorter inputs are zero-padded).

Scores beside the headline:
    baseline_accuracy     always answering the most frequent training label
    depth_<d>_accuracy    the test trees of depth d, and the deeper trees of the `deep` split
                          (deeper than any training tree: depth extrapolation)
    deep_accuracy         all of the `deep` split
and the figure `accuracy_by_depth.png`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines.plots import plt, save
from pipelines.tasks.base import PREDICT_BATCH, arrays
from pipelines.tasks.classification import Classification, accuracy

# Upper bounds (exclusive) of the length buckets: nodes for trees, tokens for strings.
BUCKETS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192)
DEEP = "deep"   # the split of deeper trees, where the dataset has one


class TreeClassification(Classification):
    name = "tree_classification"
    no_int8 = "a model of token-id inputs, which TFLite's full-integer conversion does not quantise"

    def __init__(self, trees: bool = False):
        self.trees = trees   # the node arrays in (else the token string)

    def serving(self, architecture) -> TreeClassification:
        return TreeClassification(trees=architecture.trees)

    @property
    def input_dtype(self) -> str:
        return "int32"

    # --- data ------------------------------------------------------------------------
    def preprocess(self, inputs, label):
        """One view of the tree, cut to its length: (nodes, 1 + A) with node 0 the padding
        node, or the tokens."""
        if self.trees:
            nodes = tf.concat([inputs["node_tokens"][:, None], inputs["children"]], axis=-1)
            return nodes[:tf.math.count_nonzero(inputs["node_tokens"], dtype=tf.int32) + 1], label
        tokens = inputs["tokens"]
        return tokens[:tf.math.count_nonzero(tokens, dtype=tf.int32)], label

    def export_shape(self, splits) -> tuple[int, ...]:
        features = splits.info.features
        if self.trees:
            return features["node_tokens"].shape[0], 1 + features["children"].shape[-1]
        return tuple(features["tokens"].shape)

    def input_shape(self, splits) -> tuple:
        return (None, *self.export_shape(splits)[1:])   # any length: batches are cut to their longest

    def group(self, ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
        return ds.bucket_by_sequence_length(lambda x, y: tf.shape(x)[0], list(BUCKETS),
                                            [batch_size] * (len(BUCKETS) + 1))

    def arrays(self, ds: tf.data.Dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A split's inputs zero-padded to its longest example, and its labels."""
        return arrays(ds.map(self.preprocess, num_parallel_calls=tf.data.AUTOTUNE), limit, padded=True)

    def predict(self, model, inputs):
        """Outputs in batches of similar length, each cut to its longest (zero padding past
        a tree's end changes nothing but the cost)."""
        lengths = np.count_nonzero(inputs[..., 0] if self.trees else inputs, axis=1) + int(self.trees)
        order = np.argsort(lengths, kind="stable")
        outputs = np.zeros((len(inputs), model.output_shape[-1]), np.float32)
        for start in range(0, len(order), PREDICT_BATCH):
            rows = order[start:start + PREDICT_BATCH]
            longest = int(lengths[rows].max())   # rounded up to a bucket bound: fewer shapes to trace
            width = min(next((b for b in BUCKETS if b >= longest), longest), inputs.shape[1])
            outputs[rows] = model.predict_on_batch(inputs[rows, :width])
        return outputs

    # --- scoring ---------------------------------------------------------------------
    def extra(self, model, splits, inputs, targets, out_dir: Path, settings) -> tuple[dict[str, float], list[Path]]:
        train_labels = np.concatenate([y for _, y in splits.train.batch(4096).as_numpy_iterator()])
        majority = int(np.bincount(train_labels).argmax())
        metrics = {"baseline_accuracy": float(np.mean(targets == majority))}
        outputs = {"test": (self.predict(model, inputs), targets)}
        if DEEP in splits.builder.info.splits:
            deep = splits.builder.as_dataset(split=DEEP, as_supervised=True, shuffle_files=False)
            x_deep, y_deep = self.arrays(deep)
            outputs[DEEP] = (self.predict(model, x_deep), y_deep)
            metrics["deep_accuracy"] = accuracy(*outputs[DEEP])
        by_depth = {}
        for split, (predicted, labels) in outputs.items():
            depths = depths_of(splits.builder, split)
            for d in np.unique(depths):
                by_depth[int(d)] = (split, accuracy(predicted[depths == d], labels[depths == d]),
                                    int(np.sum(depths == d)))
                metrics[f"depth_{d}_accuracy"] = by_depth[int(d)][1]
        path = out_dir / "accuracy_by_depth.png"
        plot_by_depth(by_depth, metrics["baseline_accuracy"], path)
        return metrics, [path]


def depths_of(builder, split: str) -> np.ndarray:
    """Each example's tree depth, in the order of the split's supervised examples."""
    ds = builder.as_dataset(split=split, shuffle_files=False).map(lambda e: e["depth"])
    return np.concatenate(list(ds.batch(4096).as_numpy_iterator()))


def plot_by_depth(by_depth: dict[int, tuple[str, float, int]], baseline: float, path: Path) -> None:
    """Accuracy per tree depth, the test split's depths and the deeper split's apart."""
    depths = sorted(by_depth)
    fig, ax = plt.subplots(figsize=(1.0 * len(depths) + 3, 3.6))
    colours = ["tab:blue" if by_depth[d][0] == "test" else "tab:orange" for d in depths]
    bars = ax.bar([str(d) for d in depths], [by_depth[d][1] for d in depths], color=colours)
    for bar, d in zip(bars, depths):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{by_depth[d][1]:.3f}\nn={by_depth[d][2]}",
                ha="center", va="bottom", fontsize=7)
    ax.axhline(baseline, color="grey", ls="--", lw=1, label=f"majority class {baseline:.3f}")
    ax.bar([], [], color="tab:blue", label="test (training depths)")
    ax.bar([], [], color="tab:orange", label="deep (deeper than training)")
    ax.set_xlabel("tree depth")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("accuracy by tree depth")
    save(fig, path)


TASK = TreeClassification()
