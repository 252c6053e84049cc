"""The pictures people look at: learning curves, confusion matrices, the leaderboard."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


def learning_curves(history: pd.DataFrame, path: Path, title: str) -> None:
    """Loss and every other metric per epoch, training and validation side by side."""
    metrics = [c for c in history.columns if c not in ("epoch", "learning_rate")
               and not c.startswith("val_")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        epochs = history["epoch"] + 1
        ax.plot(epochs, history[metric], label="train", marker="o", ms=3)
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], label="validation", marker="o", ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, class_names: list[str],
                     path: Path) -> None:
    size = max(5.0, 0.55 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        targets, predictions, labels=list(range(len(class_names))), display_labels=class_names,
        ax=ax, colorbar=False, xticks_rotation=45, cmap="Blues")
    ax.set_title(f"confusion matrix (accuracy {np.mean(targets == predictions):.4f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def leaderboard(table: pd.DataFrame, path: Path) -> None:
    """Per task: headline metric, TFLite float32 size and latency, one bar per experiment."""
    groups = list(table.groupby("task", sort=True))
    columns = [("headline", "test metric"), ("float32_size_kb", "float32 .tflite (KiB)"),
               ("int8_size_kb", "int8 .tflite (KiB)"), ("float32_latency_ms", "float32 latency (ms)")]
    fig, axes = plt.subplots(len(groups), len(columns), figsize=(4.2 * len(columns), 0.5 + 2.6 * len(groups)),
                             squeeze=False)
    for row, (task, group) in zip(axes, groups):
        for ax, (column, label) in zip(row, columns):
            values = group[column].astype(float)
            ax.barh(group["experiment"], values, color="tab:blue")
            for y, v in enumerate(values):
                if np.isfinite(v):
                    ax.text(v, y, f" {v:.4g}", va="center", fontsize=8)
            metric = group["metric"].iloc[0]
            ax.set_title(f"{task}\n{metric if column == 'headline' else label}", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
            if column == "headline" and len(values.dropna()):
                low = values.min()
                ax.set_xlim(max(0.0, low - (values.max() - low) - 0.02), None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
