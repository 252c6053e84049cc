"""The pictures people look at: learning curves, confusion matrices, forecasts, the
long-term dependency study, the leaderboard."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402
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
    """Per task, one bar per experiment: headline metric, TFLite sizes, latency and parity."""
    groups = list(table.groupby("task", sort=True))
    columns = [("headline", None), ("float32_size_kb", "float32 .tflite (KiB)"),
               ("int8_size_kb", "int8 .tflite (KiB)"), ("float32_latency_ms", "float32 latency (ms)"),
               ("float32_max_abs_diff", "float32 parity: max abs diff"), ("int8_delta", "int8 metric change")]
    per_row = 3
    rows_per_task = -(-len(columns) // per_row)
    bar_height = 0.45 * max(len(g) for _, g in groups) + 1.4
    fig, axes = plt.subplots(rows_per_task * len(groups), per_row, squeeze=False,
                             figsize=(4.4 * per_row, bar_height * rows_per_task * len(groups)))
    for t, (task, group) in enumerate(groups):
        for i, (column, label) in enumerate(columns):
            ax = axes[t * rows_per_task + i // per_row][i % per_row]
            values = group[column].astype(float)
            ax.barh(group["experiment"], values, color="tab:green" if column == "headline" else "tab:blue")
            for y, v in enumerate(values):
                if np.isfinite(v):
                    ax.text(v, y, f" {v:.4g}", va="center", fontsize=8)
            ax.set_title(f"{task}: {label or group['metric'].iloc[0]}", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
            ax.invert_yaxis()
            if column == "headline" and len(values.dropna()):
                low = values.min()
                ax.set_xlim(max(0.0, low - (values.max() - low) - 0.02), min(1.0, values.max() + 0.03)
                            if values.max() <= 1 else None)
            if column in ("float32_max_abs_diff", "int8_delta"):
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
        for j in range(len(columns), rows_per_task * per_row):
            axes[t * rows_per_task + j // per_row][j % per_row].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def forecast(targets: np.ndarray, predictions: np.ndarray, path: Path, steps: int = 400) -> None:
    """The first `steps` test points, actual and one-step predicted, and the error."""
    n = min(steps, len(targets))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot(targets[:n], label="actual", lw=1.2)
    top.plot(predictions[:n], label="predicted", lw=1.0, ls="--")
    top.set_ylabel("value (standardised)")
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    bottom.plot(predictions[:n] - targets[:n], color="tab:red", lw=0.8)
    bottom.set_ylabel("error")
    bottom.set_xlabel("test step")
    bottom.grid(alpha=0.3)
    rmse = np.sqrt(np.mean((predictions - targets) ** 2))
    top.set_title(f"one-step forecast (NRMSE {rmse / np.std(targets):.4f} over {len(targets)} steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def free_run(actual: np.ndarray, generated: np.ndarray, horizon: int, path: Path) -> None:
    """A free-running generation against the series it should follow."""
    fig, ax = plt.subplots(figsize=(10, 3.6))
    steps = np.arange(1, len(actual) + 1)
    ax.plot(steps, actual, label="actual", lw=1.2)
    ax.plot(steps, generated, label="generated (outputs fed back)", lw=1.2, ls="--")
    ax.axvline(horizon, color="grey", lw=0.8, ls=":", label=f"step {horizon}")
    ax.set_xlabel("steps after the training series")
    ax.set_ylabel("value (standardised)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def predicted_vs_actual(targets: np.ndarray, predictions: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(targets, predictions, s=4, alpha=0.5)
    low, high = float(min(targets.min(), predictions.min())), float(max(targets.max(), predictions.max()))
    ax.plot([low, high], [low, high], color="black", lw=0.8, label="y = x")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(f"test MSE {np.mean((predictions - targets) ** 2):.4g}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bpc_along_text(bpc: np.ndarray, baseline: float, path: Path, smooth: int = 25) -> None:
    """A language model's bits per character along the held-out text, window by window
    (and a running mean over `smooth` windows), against the unigram baseline."""
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(np.arange(len(bpc)), bpc, lw=0.5, alpha=0.4, label="per window")
    if len(bpc) >= smooth:
        running = np.convolve(bpc, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(smooth - 1, len(bpc)), running, lw=1.4, label=f"running mean of {smooth}")
    ax.axhline(bpc.mean(), color="black", lw=0.8, label=f"model {bpc.mean():.3f}")
    ax.axhline(baseline, color="grey", lw=0.8, ls="--", label=f"unigram {baseline:.3f}")
    ax.set_xlabel("window of the held-out text")
    ax.set_ylabel("bits per character")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def exact_match_by_length(lengths: np.ndarray, correct: np.ndarray, path: Path) -> None:
    """Seq2seq: the share of whole answers right, by the length of the question."""
    values = sorted(set(lengths.tolist()))
    shares = [correct[lengths == v].mean() for v in values]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bars = ax.bar([str(v) for v in values], shares)
    ax.bar_label(bars, labels=[f"{s:.3f}\n(n={int((lengths == v).sum())})" for s, v in zip(shares, values)],
                 fontsize=7)
    ax.set_xlabel("question length (tokens)")
    ax.set_ylabel("exact match (greedy)")
    ax.set_ylim(0, 1.15)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latent_map(codes: np.ndarray, labels: np.ndarray, class_names: list[str] | None, path: Path) -> None:
    """Test images' codes in 2-D (the first two principal components when the code is
    wider), one colour per class."""
    from sklearn.decomposition import PCA

    flat = codes.reshape(len(codes), -1)
    points = flat[:, :2] if flat.shape[1] <= 2 else PCA(2, random_state=0).fit_transform(flat)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for c in np.unique(labels):
        chosen = labels == c
        name = class_names[c] if class_names else str(c)
        ax.scatter(points[chosen, 0], points[chosen, 1] if points.shape[1] > 1 else np.zeros(chosen.sum()),
                   s=3, alpha=0.6, label=name)
    ax.set_xlabel("code 1" if flat.shape[1] <= 2 else "principal component 1")
    ax.set_ylabel("code 2" if flat.shape[1] <= 2 else "principal component 2")
    ax.legend(markerscale=4, fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def roc_auc_per_class(results: pd.DataFrame, path: Path) -> None:
    """One-class anomaly detection: ROC-AUC with each class as the normal one."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if len(results):
        bars = ax.bar(results["name"].astype(str), results["roc_auc"].astype(float))
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in results["roc_auc"]], fontsize=7)
        ax.axhline(results["roc_auc"].mean(), color="black", lw=0.8, ls="--",
                   label=f"mean {results['roc_auc'].mean():.3f}")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance 0.5")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("ROC-AUC (normal class vs the rest)")
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mse_vs_length(results: pd.DataFrame, baseline: float, path: Path) -> None:
    """The long-term dependency study: test MSE against T, one line per cell and clipping
    setting (solid: clipped, dashed: not), the no-memory baseline drawn across."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if results.empty:
        ax.text(0.5, 0.5, "no study in params.yaml", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    colours = dict(zip(sorted(results["cell"].unique()), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (cell, clip), group in results.groupby(["cell", results["clipnorm"].fillna(0.0)], sort=True):
        group = group.sort_values("length")
        label = f"{cell}, " + (f"clipnorm {clip:g}" if clip else "no clipping")
        ax.plot(group["length"], group["test_mse"], marker="o", color=colours[cell],
                ls="-" if clip else "--", label=label)
    ax.axhline(baseline, color="black", lw=1, ls=":", label=f"no memory: 1/6 = {baseline:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(results["length"].unique()))
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("test MSE")
    updates = int(results["updates"].iloc[0])
    ax.set_title(f"adding problem: test MSE after {updates:,} updates")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
