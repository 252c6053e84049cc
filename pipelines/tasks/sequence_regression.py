"""Sequence regression: a sequence -> one real value (the adding problem); `test_mse`
beside `baseline_mse`, the best constant prediction (the targets' mean: no memory of the
input; 1/6 on the adding problem)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.plots import plt, save
from pipelines.tasks.regression import Regression, mse


def plot_predicted_vs_actual(targets: np.ndarray, predictions: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(targets, predictions, s=4, alpha=0.5)
    low, high = float(min(targets.min(), predictions.min())), float(max(targets.max(), predictions.max()))
    ax.plot([low, high], [low, high], color="black", lw=0.8, label="y = x")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(f"test MSE {np.mean((predictions - targets) ** 2):.4g}")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, path)


class SequenceRegression(Regression):
    name = "sequence_regression"
    headline = "mse"

    def score(self, outputs, targets) -> float:
        return mse(outputs, targets)

    def baselines(self, inputs, targets) -> dict[str, float]:
        """The best prediction without memory of the input: the targets' mean (adding: 1/6)."""
        return {"baseline_mse": mse(np.full(targets.shape, targets.mean()), targets)}

    def plot(self, outputs, targets, names, out_dir: Path, inputs=None) -> list[Path]:
        path = out_dir / "predicted_vs_actual.png"
        plot_predicted_vs_actual(targets, outputs.reshape(targets.shape), path)
        return [path]


TASK = SequenceRegression()
