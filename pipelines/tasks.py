"""Tasks: what a dataset asks of a model, shared by every architecture that does it.

A task fixes the input scaling, the loss, the Keras metrics, the headline test
metric (the same MLflow name for every architecture: `test_accuracy`, ...), how a
model's outputs are scored, and the task's plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import tensorflow as tf

from pipelines import plots


@dataclass(frozen=True)
class Task:
    name: str
    loss: str
    metrics: tuple[str, ...]
    headline: str               # Keras metric name; logged as test_<headline>
    higher_is_better: bool
    preprocess: Callable        # (features, label) -> (inputs, target), in tf.data
    score: Callable             # (outputs: np.ndarray, targets: np.ndarray) -> headline value
    plot: Callable              # (outputs, targets, class_names, out_dir) -> list of files
    table: Callable             # (outputs, targets, class_names) -> per-example DataFrame


def _scale_image(image, label):
    return tf.cast(image, tf.float32) / 255.0, label


def _accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(outputs.argmax(axis=-1) == targets))


def _classification_plots(outputs, targets, class_names, out_dir: Path) -> list[Path]:
    path = out_dir / "confusion_matrix.png"
    plots.confusion_matrix(targets, outputs.argmax(axis=-1), class_names, path)
    return [path]


def _classification_table(outputs, targets, class_names) -> pd.DataFrame:
    names = np.asarray(class_names)
    return pd.DataFrame({"actual": names[targets], "predicted": names[outputs.argmax(axis=-1)]})


TASKS = {
    "image_classification": Task(
        name="image_classification",
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
        headline="accuracy",
        higher_is_better=True,
        preprocess=_scale_image,
        score=_accuracy,
        plot=_classification_plots,
        table=_classification_table,
    ),
}


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None


def batches(ds: tf.data.Dataset, task: Task, batch_size: int, *, shuffle_buffer: int = 0,
            seed: int = 0) -> tf.data.Dataset:
    """The tf.data pipeline: preprocess, cache, (shuffle), batch, prefetch."""
    ds = ds.map(task.preprocess, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def arrays(ds: tf.data.Dataset, task: Task, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A split as preprocessed NumPy arrays (inputs, targets), optionally the first `limit`."""
    ds = ds.map(task.preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    if limit is not None:
        ds = ds.take(limit)
    xs, ys = [], []
    for x, y in ds.batch(1024).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("the split is empty")
    return np.concatenate(xs), np.concatenate(ys)
