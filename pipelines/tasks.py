"""Tasks: what a dataset asks of a model, shared by every architecture that does it.

A task fixes the input scaling, the model's output (softmax over classes, linear, or
one softmax per step), the loss, the Keras metrics, the headline test metric (the same
MLflow name for every architecture on the task), how outputs are scored, the baselines
that need no model, and the task's plots.

    image_classification     images -> class              test_accuracy
    sequence_classification  padded sequences -> class    test_accuracy
    forecasting              window -> next value         test_nrmse, baseline_nrmse (persistence),
                                                          free_run_nrmse_84 (outputs fed back)
    sequence_regression      sequence -> real value       test_mse, baseline_mse (best constant)
    sequence_tagging         sequence -> class per step   test_symbol_accuracy (non-blank steps)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import tensorflow as tf

from models.registry import Head
from pipelines import plots


@dataclass(frozen=True)
class Task:
    name: str
    loss: str
    metrics: tuple[str, ...]
    headline: str               # logged as test_<headline>: accuracy, nrmse, mse, ...
    higher_is_better: bool
    preprocess: Callable        # (input, target) -> (model input, target), in tf.data
    head: Callable              # (Splits) -> Head: the model's output for this task
    score: Callable             # (outputs: np.ndarray, targets: np.ndarray) -> headline value
    plot: Callable              # (outputs, targets, class_names, out_dir) -> list of files
    table: Callable             # (outputs, targets, class_names) -> per-example DataFrame
    baselines: Callable = lambda inputs, targets: {}  # reference scores that need no model
    # Scores that need the model itself (free-running generation): (model, Splits, out_dir)
    # -> (metrics, figure files)
    generation: Callable = lambda model, splits, out_dir: ({}, [])

    def input_shape(self, splits) -> tuple[int, ...]:
        return tuple(splits.input_feature.shape)


def _scale_image(image, label):
    return tf.cast(image, tf.float32) / 255.0, label


def _as_float(sequence, target):
    return tf.cast(sequence, tf.float32), target


def _softmax(splits) -> Head:
    return Head(len(splits.class_names))


def _softmax_per_step(splits) -> Head:
    return Head(len(splits.class_names), per_step=True)


def _linear(splits) -> Head:
    return Head(1, activation="linear")


def _accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(outputs.argmax(axis=-1) == targets))


def _classification_plots(outputs, targets, class_names, out_dir: Path) -> list[Path]:
    path = out_dir / "confusion_matrix.png"
    plots.confusion_matrix(targets, outputs.argmax(axis=-1), class_names, path)
    return [path]


def _classification_table(outputs, targets, class_names) -> pd.DataFrame:
    names = np.asarray(class_names)
    return pd.DataFrame({"actual": names[targets], "predicted": names[outputs.argmax(axis=-1)]})


def _mse(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((outputs.reshape(targets.shape) - targets) ** 2))


def nrmse(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Root-mean-square error over the targets' standard deviation (1 = predicting the mean)."""
    return float(np.sqrt(_mse(outputs, targets)) / np.std(targets))


def _persistence(inputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Forecast the next point as the last one seen."""
    return {"baseline_nrmse": nrmse(inputs[:, -1, 0], targets)}


def _constant(inputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The best prediction without memory of the input: the targets' mean (adding: 1/6)."""
    return {"baseline_mse": _mse(np.full(targets.shape, targets.mean()), targets)}


def _regression_table(outputs, targets, class_names) -> pd.DataFrame:
    return pd.DataFrame({"actual": targets, "predicted": outputs.reshape(targets.shape)})


def _forecast_plots(outputs, targets, class_names, out_dir: Path) -> list[Path]:
    path = out_dir / "forecast.png"
    plots.forecast(targets, outputs.reshape(targets.shape), path)
    return [path]


FREE_RUN_STEPS = 100   # generated right after the training series
HORIZON = 84           # the classic free-running horizon (Jaeger & Haas 2004)
TRIAL_STRIDE = 20      # free-running trials start every 20 points of the test series


def free_run(model, windows: np.ndarray, steps: int) -> np.ndarray:
    """Feed a window -> next point model its own outputs: `steps` points after each window."""
    predict = tf.function(lambda x: model(x, training=False))
    x = tf.constant(windows, tf.float32)
    generated = []
    for _ in range(steps):
        following = tf.reshape(predict(x), (-1, 1, 1))
        generated.append(following[:, 0, 0])
        x = tf.concat([x[:, 1:], following], axis=1)
    return np.stack([g.numpy() for g in generated], axis=1)


def _free_running(model, splits, out_dir: Path) -> tuple[dict[str, float], list[Path]]:
    """Free-running generation, each output fed back as the next input, from the series:
    `free_run_nrmse_84`, the error at step 84 over trials started every 20 test points
    (sqrt of the mean squared error over trials / std of the test series); and
    `free_run_100_nrmse` over the 100 points right after the training series, drawn."""
    train, test = splits.series("train"), splits.series("test")
    width = model.input_shape[1]
    after_training = free_run(model, train[None, -width:, None], FREE_RUN_STEPS)[0]
    starts = np.arange(0, len(test) - width - HORIZON + 1, TRIAL_STRIDE)
    windows = np.stack([test[s:s + width] for s in starts])[..., None]
    at_horizon = free_run(model, windows, HORIZON)[:, -1]
    truth = test[starts + width + HORIZON - 1]
    scale = np.std(test)
    metrics = {f"free_run_nrmse_{HORIZON}": float(np.sqrt(np.mean((at_horizon - truth) ** 2)) / scale),
               "free_run_trials": int(len(starts)),
               f"free_run_{FREE_RUN_STEPS}_nrmse": nrmse(after_training, test[:FREE_RUN_STEPS])}
    path = out_dir / "free_run.png"
    plots.free_run(test[:FREE_RUN_STEPS], after_training, HORIZON, path)
    return metrics, [path]


def _regression_plots(outputs, targets, class_names, out_dir: Path) -> list[Path]:
    path = out_dir / "predicted_vs_actual.png"
    plots.predicted_vs_actual(targets, outputs.reshape(targets.shape), path)
    return [path]


def _symbol_accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Accuracy at the steps whose target is a symbol (class 0, blank, is the filler)."""
    symbols = targets != 0
    return float(np.mean(outputs.argmax(axis=-1)[symbols] == targets[symbols]))


def _guess_symbol(inputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Always answering the most frequent symbol."""
    counts = np.bincount(targets[targets != 0])
    return {"baseline_symbol_accuracy": float(counts.max() / counts.sum())}


def _tagging_table(outputs, targets, class_names) -> pd.DataFrame:
    names = np.asarray(class_names)
    predicted = outputs.argmax(axis=-1)
    symbols = targets != 0
    return pd.DataFrame({"actual": [" ".join(names[t[m]]) for t, m in zip(targets, symbols)],
                         "predicted": [" ".join(names[p[m]]) for p, m in zip(predicted, symbols)]})


def _no_plots(outputs, targets, class_names, out_dir: Path) -> list[Path]:
    return []


_CLASSIFICATION = dict(loss="sparse_categorical_crossentropy", metrics=("accuracy",),
                       headline="accuracy", higher_is_better=True, head=_softmax,
                       score=_accuracy, plot=_classification_plots, table=_classification_table)

TASKS = {
    "image_classification": Task(name="image_classification", preprocess=_scale_image, **_CLASSIFICATION),
    "sequence_classification": Task(name="sequence_classification", preprocess=_as_float,
                                    **_CLASSIFICATION),
    "forecasting": Task(name="forecasting", loss="mse", metrics=("mae",), headline="nrmse",
                        higher_is_better=False, preprocess=_as_float, head=_linear, score=nrmse,
                        plot=_forecast_plots, table=_regression_table, baselines=_persistence,
                        generation=_free_running),
    "sequence_regression": Task(name="sequence_regression", loss="mse", metrics=("mae",),
                                headline="mse", higher_is_better=False, preprocess=_as_float,
                                head=_linear, score=_mse, plot=_regression_plots,
                                table=_regression_table, baselines=_constant),
    "sequence_tagging": Task(name="sequence_tagging", loss="sparse_categorical_crossentropy",
                             metrics=("accuracy",), headline="symbol_accuracy",
                             higher_is_better=True, preprocess=_as_float, head=_softmax_per_step,
                             score=_symbol_accuracy, plot=_no_plots, table=_tagging_table,
                             baselines=_guess_symbol),
}


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None


def batches(ds: tf.data.Dataset, task: Task, batch_size: int, *, shuffle_buffer: int = 0,
            seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """The tf.data pipeline: preprocess, cache, (shuffle), (repeat), batch, prefetch."""
    ds = ds.map(task.preprocess, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
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
