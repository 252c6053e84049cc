"""Sequence tagging: a class at every step (the copy task; class 0, blank, is the filler);
`test_symbol_accuracy` over the steps whose target is a symbol, beside always answering the
most frequent symbol."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.registry import Head
from pipelines.tasks.base import Task


class SequenceTagging(Task):
    name = "sequence_tagging"
    loss = "sparse_categorical_crossentropy"
    metrics = ("accuracy",)
    headline = "symbol_accuracy"
    higher_is_better = True

    def head(self, splits) -> Head:
        return Head(len(splits.class_names), per_step=True)

    def score(self, outputs, targets) -> float:
        """Accuracy at the steps whose target is a symbol (class 0, blank, is the filler)."""
        symbols = targets != 0
        return float(np.mean(outputs.argmax(axis=-1)[symbols] == targets[symbols]))

    def baselines(self, inputs, targets) -> dict[str, float]:
        """Always answering the most frequent symbol."""
        counts = np.bincount(targets[targets != 0])
        return {"baseline_symbol_accuracy": float(counts.max() / counts.sum())}

    def table(self, outputs, targets, names, inputs=None) -> pd.DataFrame:
        names = np.asarray(names)
        predicted = outputs.argmax(axis=-1)
        symbols = targets != 0
        return pd.DataFrame({"actual": [" ".join(names[t[m]]) for t, m in zip(targets, symbols)],
                             "predicted": [" ".join(names[p[m]]) for p, m in zip(predicted, symbols)]})


TASK = SequenceTagging()
