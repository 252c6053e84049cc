"""The task base: what every task gives the generic train, evaluate and export path.

A task fixes the input scaling (`preprocess`, in tf.data), the model's output (`head`), the
loss, the Keras metrics, the headline test metric (logged as `test_<headline>`, the same
MLflow name for every architecture on the task), how outputs come from a model (`predict`)
and are scored (`score`, `details`), the baselines that need no model, the pictures and the
per-example table, the scores that need the model itself (`extra`: free-running
generation, beam search, sampling...), its evaluation-only settings (`Evaluation`, the
experiment's `evaluation` block in params.yaml) and how its models go to TFLite
(`exporter`). Subclasses override what differs; shared code never asks a task's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import tensorflow as tf
from pydantic import BaseModel, ConfigDict

from models.registry import Head

PREDICT_BATCH = 256


class Evaluation(BaseModel):
    """Evaluation-only settings (none by default): the `evaluation` block of an experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Task:
    name: ClassVar[str]
    loss: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]] = ()
    headline: ClassVar[str]
    higher_is_better: ClassVar[bool]
    Evaluation: ClassVar[type[Evaluation]] = Evaluation
    tokens: ClassVar[bool] = False    # int32 token ids in (else float32)
    # what its models export instead of a full-integer variant (None: its exporter writes one)
    no_int8: ClassVar[str | None] = None

    def serving(self, architecture) -> Task:
        """The task as it serves `architecture` (a `models.registry.Architecture`): itself,
        unless the task gives different architectures different views of its examples."""
        return self

    # --- data ------------------------------------------------------------------------
    def preprocess(self, inputs, targets):
        """(input, target) of the dataset -> (model input, target), inside tf.data."""
        return tf.cast(inputs, tf.float32), targets

    def input_shape(self, splits) -> tuple[int, ...]:
        return splits.input_shape

    def export_shape(self, splits) -> tuple[int, ...]:
        """The input shape of the exported files (a variable length fixed at the longest the
        dataset holds)."""
        return self.input_shape(splits)

    @property
    def input_dtype(self) -> str:
        return "int32" if self.tokens else "float32"

    def head(self, splits) -> Head:
        raise NotImplementedError

    def batches(self, ds: tf.data.Dataset, batch_size: int, *, shuffle_buffer: int = 0, seed: int = 0,
                repeat: str | None = None) -> tf.data.Dataset:
        """The tf.data pipeline: preprocess, cache, (shuffle), batch, prefetch. `repeat`:
        "examples" repeats the split before batching (a fixed number of updates whatever its
        size), "epochs" repeats the batched passes (each pass reshuffled, its last batch partial).
        Either is one endless stream, drawn by one iterator however many epochs `fit` makes of
        it, so a resumed run skips what the epochs before drew (`pipelines/resume.py`)."""
        ds = ds.map(self.preprocess, num_parallel_calls=tf.data.AUTOTUNE).cache()
        if shuffle_buffer:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat == "examples":
            ds = ds.repeat()
        ds = self.group(ds, batch_size)
        if repeat == "epochs":
            ds = ds.repeat()
        return ds.prefetch(tf.data.AUTOTUNE)

    def group(self, ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
        """Examples into batches of `batch_size` (the last one of a pass partial)."""
        return ds.batch(batch_size)

    def training_stream(self, splits, limit: int | None = None):
        """The training split read as one stream (`models.registry.Stream`), for a closed-form
        fit in the continuous regime; None where examples are not cut from one series."""
        return None

    def arrays(self, ds: tf.data.Dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A split as preprocessed NumPy arrays (inputs, targets), optionally the first
        `limit`; inputs are a tuple of arrays for a model of several inputs (seq2seq)."""
        return arrays(ds.map(self.preprocess, num_parallel_calls=tf.data.AUTOTUNE), limit)

    # --- scoring ---------------------------------------------------------------------
    def predict(self, model, inputs):
        """The task's outputs from a Keras model."""
        return model.predict(inputs, batch_size=PREDICT_BATCH, verbose=0)

    def parity_reference(self, model, inputs, outputs):
        """What an exported file must compute, given the task's `outputs` from `predict`
        (by default those outputs themselves)."""
        return outputs

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        raise NotImplementedError

    def details(self, outputs, targets) -> dict[str, float]:
        """Scores beside the headline."""
        return {}

    def baselines(self, inputs, targets) -> dict[str, float]:
        """Reference scores that need no model."""
        return {}

    def plot(self, outputs, targets, names, out_dir: Path, inputs=None) -> list[Path]:
        """The task's pictures of the test outputs, written into `out_dir`."""
        return []

    def table(self, outputs, targets, names, inputs=None) -> pd.DataFrame:
        """One row per test example (`predictions.csv`)."""
        raise NotImplementedError

    def extra(self, model, splits, inputs, targets, out_dir: Path,
              settings: Evaluation) -> tuple[dict[str, float], list[Path]]:
        """Scores that need the model itself, and their files."""
        return {}, []

    # --- export ----------------------------------------------------------------------
    def exporter(self) -> type:
        """How the task's models go to TFLite (a class of `pipelines.exporters`)."""
        from pipelines.exporters.single import SingleModel

        return SingleModel


def arrays(ds: tf.data.Dataset, limit: int | None = None, *, padded: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of a dataset of pairs as NumPy arrays, optionally the first `limit`;
    `padded`: inputs of varying length, zero-padded to the longest."""
    if limit is not None:
        ds = ds.take(limit)
    xs, ys = [], []
    for x, y in (ds.padded_batch(1024) if padded else ds.batch(1024)).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("the split is empty")
    if padded:
        width = max(x.shape[1] for x in xs)
        xs = [np.pad(x, [(0, 0), (0, width - x.shape[1]), *[(0, 0)] * (x.ndim - 2)]) for x in xs]
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *xs), np.concatenate(ys)
