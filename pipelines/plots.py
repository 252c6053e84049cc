"""The figure helpers every stage shares: matplotlib without a screen, `save`, the
learning curves and rows of images. Each task draws its own pictures
(`pipelines/tasks/<task>.py`), each sweep and the report theirs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["image_rows", "learning_curves", "plt", "save"]


def save(fig, path: Path) -> None:
    """Lay the figure out, write it as a PNG and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    save(fig, path)


def image_rows(rows: dict[str, np.ndarray], path: Path) -> None:
    """Rows of images (N, H, W, 1) in [0, 1], one row per entry, titled by its key."""
    n = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.25 * len(rows)), squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c][..., 0], cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(title, fontsize=8, loc="left")
    save(fig, path)
