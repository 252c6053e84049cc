"""Forecasting: a window of the series -> its next value.

    test_nrmse        RMSE of the one-step forecasts over the targets' standard deviation
    baseline_nrmse    the persistence forecast (the next point is the last one seen)
    free_run_nrmse_<horizon>   free-running generation (each output fed back as the next
                      input): the error `horizon` steps on, over trials started every
                      `trial_stride` test points
    free_run_<steps>_nrmse     the `free_run_steps` points right after the training series
                      (the free-run scores only for a series alone: with input columns
                      beside it, a user's CSV series, their future values are unknown)

and the same scores streamed (`_stream`), by the model's step model (`models/streaming.py`)
with its state carried rather than a window read from a zero state: warmed up on the last
`stream_warmup` points of the training series, then reading the test series one point at a
time; each free run starts from the state carried to the point its window ends at. Same
targets, same scaling as the windowed scores (a bidirectional model has no step model).

Evaluation settings (`evaluation:` of an experiment): `horizon` (84, Jaeger & Haas 2004),
`free_run_steps` (100), `trial_stride` (20), `stream_warmup` (default: the window).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from pydantic import Field

from models.registry import Stream, inference_graph
from models.streaming import Stepper, step_model
from pipelines.plots import plt, save
from pipelines.tasks import base
from pipelines.tasks.regression import Regression, mse


class ForecastingEvaluation(base.Evaluation):
    horizon: int = Field(default=84, ge=1)
    free_run_steps: int = Field(default=100, ge=1)
    trial_stride: int = Field(default=20, ge=1)
    stream_warmup: int | None = Field(default=None, ge=1)


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


def training_points(splits) -> np.ndarray:
    """The training series' points in order (T, channels), what a stream is warmed up on. A
    series of one column ends with its last point (the last target); with input columns it
    ends one point short, since no window holds that point's inputs (a stream then skips it)."""
    points, following, _ = splits.stream("train")
    return np.concatenate([points[:, 0], following[-1:]])[:, None] if points.shape[-1] == 1 else points


def at_horizon_nrmse(generated: np.ndarray, series: np.ndarray, truth_at: np.ndarray) -> float:
    """The free runs' error at their horizon: sqrt of the mean squared error over the trials,
    over the standard deviation of the series."""
    return float(np.sqrt(np.mean((generated - series[truth_at]) ** 2)) / np.std(series))


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


def plot_free_run(actual: np.ndarray, generated: np.ndarray, horizon: int, path: Path,
                  streamed: np.ndarray | None = None) -> None:
    """A free-running generation against the series it should follow (and the step model's,
    from its carried state)."""
    fig, ax = plt.subplots(figsize=(10, 3.6))
    steps = np.arange(1, len(actual) + 1)
    ax.plot(steps, actual, label="actual", lw=2.4, alpha=0.5)
    ax.plot(steps, generated, label="generated from a window (outputs fed back)", lw=1.2, ls="--")
    if streamed is not None:   # markers: it can lie on the actual series
        ax.plot(steps, streamed, label="generated from the carried state", lw=1.0, ls=":", marker=".",
                markevery=4, markersize=4)
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

    def exporter(self) -> type:
        from pipelines.exporters.stream import Streaming

        return Streaming

    def training_stream(self, splits, limit: int | None = None) -> Stream:
        points, targets, positions = splits.stream("train")
        return Stream(points, targets, np.isin(positions, splits.positions(limit)))

    def extra(self, model, splits, inputs, targets, out_dir: Path,
              settings: ForecastingEvaluation) -> tuple[dict[str, float], list[Path]]:
        """Free-running generation from the series, each output fed back as the next input:
        the error at step `horizon` over trials started every `trial_stride` test points
        (sqrt of the mean squared error over trials / std of the test series), and over the
        `free_run_steps` points right after the training series, drawn; from windows, then
        streamed (see the module docstring), with the streamed one-step score. The free runs
        are not for a series with input columns beside the forecast one (their future values
        are unknown)."""
        horizon, steps, width = settings.horizon, settings.free_run_steps, model.input_shape[1]
        test = splits.series("test")
        starts = np.arange(0, len(test) - width - horizon + 1, settings.trial_stride)
        metrics, after_training = {}, None
        if model.input_shape[-1] == 1:
            train = splits.series("train")
            after_training = free_run(model, train[None, -width:, None], steps)[0]
            windows = np.stack([test[s:s + width] for s in starts])[..., None]
            at_horizon = free_run(model, windows, horizon)[:, -1]
            metrics = {f"free_run_nrmse_{horizon}": at_horizon_nrmse(at_horizon, test, starts + width + horizon - 1),
                       "free_run_trials": int(len(starts)),
                       f"free_run_{steps}_nrmse": nrmse(after_training, test[:steps])}
        try:
            stepper = Stepper(step_model(model))
        except ValueError:   # a bidirectional model reads the future: no step model
            streamed = None
        else:
            streamed, stream_metrics = self.streaming(stepper, splits, settings, width, starts, test)
            metrics.update(stream_metrics)
        if after_training is None:
            return metrics, []
        path = out_dir / "free_run.png"
        plot_free_run(test[:steps], after_training, horizon, path, streamed)
        return metrics, [path]

    @staticmethod
    def streaming(stepper: Stepper, splits, settings: ForecastingEvaluation, width: int,
                  starts: np.ndarray, test: np.ndarray) -> tuple[np.ndarray | None, dict[str, float]]:
        """The streamed scores, and the free run after the training series (None for a
        series with input columns)."""
        horizon, steps = settings.horizon, settings.free_run_steps
        train_points = training_points(splits)
        test_points, following, _ = splits.stream("test")
        warmed, states, _ = stepper.read(train_points[None, -(settings.stream_warmup or width):])
        ends = starts + width - 1      # the test point each trial's window ends at
        forecasts, _, at_ends = stepper.read(test_points[None], states, keep_states=ends)
        metrics = {"test_nrmse_stream": nrmse(forecasts[0, width - 1:], following[width - 1:])}
        if test_points.shape[-1] != 1 or not len(starts):
            return None, metrics
        trials = stepper.free_run(forecasts[0, ends], [s[:, 0] for s in at_ends], horizon)[:, -1]
        after_training = stepper.free_run(warmed[:, -1], states, steps)[0]
        metrics.update({f"free_run_nrmse_{horizon}_stream": at_horizon_nrmse(trials, test, ends + horizon),
                        f"free_run_{steps}_nrmse_stream": nrmse(after_training, test[:steps])})
        return after_training, metrics


TASK = Forecasting()
