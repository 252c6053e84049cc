"""Classification, shared by the image and the sequence tasks: softmax over the classes,
cross-entropy, accuracy, the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay

from models.registry import Head
from pipelines.plots import plt, save
from pipelines.tasks.base import Task


def accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(outputs.argmax(axis=-1) == targets))


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, class_names: list[str], path: Path) -> None:
    size = max(5.0, 0.55 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        targets, predictions, labels=list(range(len(class_names))), display_labels=class_names,
        ax=ax, colorbar=False, xticks_rotation=45, cmap="Blues")
    ax.set_title(f"confusion matrix (accuracy {np.mean(targets == predictions):.4f})")
    save(fig, path)


class Classification(Task):
    loss = "sparse_categorical_crossentropy"
    metrics = ("accuracy",)
    headline = "accuracy"
    higher_is_better = True

    def head(self, splits) -> Head:
        return Head(len(splits.class_names))

    def score(self, outputs, targets) -> float:
        return accuracy(outputs, targets)

    def plot(self, outputs, targets, names, out_dir: Path, inputs=None) -> list[Path]:
        path = out_dir / "confusion_matrix.png"
        confusion_matrix(targets, outputs.argmax(axis=-1), names, path)
        return [path]

    def table(self, outputs, targets, names, inputs=None) -> pd.DataFrame:
        names = np.asarray(names)
        return pd.DataFrame({"actual": names[targets], "predicted": names[outputs.argmax(axis=-1)]})
