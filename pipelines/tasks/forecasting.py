"""Forecasting: a window of the series -> its next value.

    test_nrmse        RMSE of the one-step forecasts over the targets' standard deviation
    baseline_nrmse    the persistence forecast (the next point is the last one seen)
    free_run_nrmse_<horizon>   free-running generation (each output fed back as the next
                      input): the error `horizon` steps on, over trials started every
                      `trial_stride` test points
    free_run_<steps>_nrmse     the `free_run_steps` points right after the training series
                      (the free-run scores only for a series alone: with input columns
                      beside it, a user's CSV series, their future values are unknown)

Evaluation settings (`evaluation:` of an experiment): `horizon` (84, Jaeger & Haas 2004),
`free_run_steps` (100), `trial_stride` (20).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from pydantic import Field

from models.registry import inference_graph
from pipelines.plots import plt, save
from pipelines.tasks import base
from pipelines.tasks.regression import Regression, mse


class ForecastingEvaluation(base.Evaluation):
    horizon: int = Field(default=84, ge=1)
    free_run_steps: int = Field(default=100, ge=1)
    trial_stride: int = Field(default=20, ge=1)


def nrmse(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Root-mean-square error over the targets' standard deviation (1 = predicting the mean)."""
    return float(np.sqrt(mse(outputs, targets)) / np.std(targets))


def free_run(model, windows: np.ndarray, steps: int) -> np.ndarray:
    """Feed a window -> next point model its own outputs: `steps` points after each window."""
    predict = inference_graph(model)
    x = tf.constant(windows, tf.float32)
    generated = []
    for _ in range(steps):
        following = tf.reshape(predict(x), (-1, 1, 1))
        generated.append(following[:, 0, 0])
        x = tf.concat([x[:, 1:], following], axis=1)
    return np.stack([g.numpy() for g in generated], axis=1)


def plot_forecast(targets: np.ndarray, predictions: np.ndarray, path: Path, steps: int = 400) -> None:
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
    save(fig, path)


def plot_free_run(actual: np.ndarray, generated: np.ndarray, horizon: int, path: Path) -> None:
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
    save(fig, path)


class Forecasting(Regression):
    name = "forecasting"
    headline = "nrmse"
    Evaluation = ForecastingEvaluation

    def score(self, outputs, targets) -> float:
        return nrmse(outputs, targets)

    def baselines(self, inputs, targets) -> dict[str, float]:
        """Forecast the next point as the last one seen."""
        return {"baseline_nrmse": nrmse(inputs[:, -1, 0], targets)}

    def plot(self, outputs, targets, names, out_dir: Path, inputs=None) -> list[Path]:
        path = out_dir / "forecast.png"
        plot_forecast(targets, outputs.reshape(targets.shape), path)
        return [path]

    def extra(self, model, splits, inputs, targets, out_dir: Path,
              settings: ForecastingEvaluation) -> tuple[dict[str, float], list[Path]]:
        """Free-running generation from the series, each output fed back as the next input:
        the error at step `horizon` over trials started every `trial_stride` test points
        (sqrt of the mean squared error over trials / std of the test series), and over the
        `free_run_steps` points right after the training series, drawn. Not for a series with
        input columns beside the forecast one (their future values are unknown)."""
        if model.input_shape[-1] != 1:
            return {}, []
        horizon, steps = settings.horizon, settings.free_run_steps
        train, test = splits.series("train"), splits.series("test")
        width = model.input_shape[1]
        after_training = free_run(model, train[None, -width:, None], steps)[0]
        starts = np.arange(0, len(test) - width - horizon + 1, settings.trial_stride)
        windows = np.stack([test[s:s + width] for s in starts])[..., None]
        at_horizon = free_run(model, windows, horizon)[:, -1]
        truth = test[starts + width + horizon - 1]
        scale = np.std(test)
        metrics = {f"free_run_nrmse_{horizon}": float(np.sqrt(np.mean((at_horizon - truth) ** 2)) / scale),
                   "free_run_trials": int(len(starts)),
                   f"free_run_{steps}_nrmse": nrmse(after_training, test[:steps])}
        path = out_dir / "free_run.png"
        plot_free_run(test[:steps], after_training, horizon, path)
        return metrics, [path]


TASK = Forecasting()
