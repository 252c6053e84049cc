"""Benchmarks (`make bench`): figures measured side by side in one run, reported as ratios.

- Echo state network against reservoirpy: reservoirpy's README setup (Mackey–Glass,
  2,000 points, the last 20 % as test; 100 units, sr 1.25, lr 0.3, ridge 1e-5, warmup
  100) run by reservoirpy 0.4.2 and by archlab's `esn` on the same series, over several
  reservoir seeds: one-step test NRMSE (RMSE / std of the targets) and fit time, and
  their ratios. Both run the test series on from the state the training series left.

- Inference: for every exported experiment, the median single-sample latency of the
  Keras model and of each TFLite variant on the LiteRT interpreter, measured here in
  turn on the same inputs, and each variant's speed-up over Keras; for a forecaster, also
  one point through each step file (`<variant>_step.tflite`, the state carried) and the
  window file's latency over it (W recurrent steps against one).
- Pipeline: the wall time of a no-op `dvc repro` (everything up to date) and of
  `dvc status`.
- Training overhead: the train stage's path (`training.fit`: tf.data, callbacks, the
  backup, MLflow) against a bare Keras `fit` of the same builder on the same batches, for
  the `cnn` and `jv_lstm` experiments (2 epochs; the CNN on 10,000 training images),
  interleaved, `OVERHEAD_ROUNDS` rounds: the median seconds per epoch of each, and the
  overhead (their ratio less 1), logging to a scratch MLflow store.
- Training settings: `pipelines.gpu_check` (the CNN and LSTM builders on arrays) under the
  TensorFlow and the JAX backend, each in a process of its own: XLA on against off,
  mixed_bfloat16 against float32, JAX against TensorFlow, as examples per second ratios.

Nothing is asserted: these machines are shared and noisy, so the figures are printed
(and written to `outputs/bench.md`) for people to compare.
"""

from __future__ import annotations

import logging
import math
import statistics
import subprocess
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tqdm import tqdm

import models
from pipelines import config, datasets, paths, runtime, tasks
from pipelines.exporters import tflite
from pipelines.runtime import StageError
from pipelines.tasks.forecasting import nrmse

log = logging.getLogger("archlab.bench")
RUNS = 300
ESN_SEEDS = range(20)
RESERVOIRPY_SETUP = {"units": 100, "sr": 1.25, "lr": 0.3, "ridge": 1e-5}
WARMUP = 100


def esn_against_reservoirpy(seeds=ESN_SEEDS, points: int = 2000) -> pd.DataFrame:
    """Per seed and library: test NRMSE, fit seconds (the `fit` call) and build + fit
    seconds (reservoirpy builds its reservoir inside `fit`; archlab in `models.build`)."""
    try:
        from reservoirpy import ESN
        from reservoirpy.datasets import mackey_glass, to_forecasting
    except ImportError:
        raise StageError("reservoirpy is a benchmark dependency: pip install -e '.[bench]'") from None
    from models import esn
    from models.registry import Head
    from pipelines.datasets.sequences import mackey_glass as our_mackey_glass

    series = mackey_glass(n_timesteps=points)
    if not np.array_equal(series[:, 0], our_mackey_glass(points)):
        raise StageError("archlab's Mackey-Glass generator no longer matches reservoirpy's")
    x_train, x_test, y_train, y_test = to_forecasting(series, test_size=0.2)
    whole = np.concatenate([x_train, x_test])[None].astype(np.float32)

    def reservoirpy_run(seed):
        started = time.perf_counter()
        model = ESN(**RESERVOIRPY_SETUP, seed=seed)
        built = time.perf_counter()
        model.fit(x_train, y_train, warmup=WARMUP)
        done = time.perf_counter()
        return model.run(x_test), done - built, done - started

    def archlab_run(seed):
        params = esn.EsnParams(**RESERVOIRPY_SETUP, warmup=WARMUP, masking=False, seed=seed)
        started = time.perf_counter()
        model = models.build("esn", (None, 1), Head(1, "linear", per_step=True), params)
        built = time.perf_counter()
        esn.fit(model, x_train[None], y_train[None], params)
        done = time.perf_counter()
        outputs = tflite.keras_predict_one(model)(whole[0]).numpy()[0, -len(x_test):]
        return outputs, done - built, done - started

    rows = []
    for library, run in (("reservoirpy 0.4.2", reservoirpy_run), ("archlab esn", archlab_run)):
        run(0)  # warm up imports and caches, untimed
        for seed in tqdm(seeds, desc=library, unit="seed", leave=False):
            outputs, fit_s, build_fit_s = run(seed)
            rows.append({"library": library, "seed": seed, "test_nrmse": nrmse(outputs, y_test),
                         "fit_s": fit_s, "build_fit_s": build_fit_s})
    return pd.DataFrame(rows)


def esn_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean NRMSE and median times per library, then archlab over reservoirpy."""
    table = runs.groupby("library", sort=False).agg(
        test_nrmse=("test_nrmse", "mean"), nrmse_std=("test_nrmse", "std"),
        fit_ms=("fit_s", lambda v: 1000 * v.median()), build_fit_ms=("build_fit_s", lambda v: 1000 * v.median()))
    ours, theirs = table.loc["archlab esn"], table.loc["reservoirpy 0.4.2"]
    ratio = pd.DataFrame([{"test_nrmse": ours.test_nrmse / theirs.test_nrmse, "nrmse_std": float("nan"),
                           "fit_ms": ours.fit_ms / theirs.fit_ms,
                           "build_fit_ms": ours.build_fit_ms / theirs.build_fit_ms}],
                         index=["ratio archlab / reservoirpy"])
    return pd.concat([table, ratio]).reset_index(names="")


def inference(params: config.Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per experiment, Keras's and each TFLite variant's single-sample latency; and per
    forecaster and variant, one point through its step file against one window."""
    rows, streamed = [], []
    for name, exp in params.experiments.items():
        files = paths.export_dir(name) / "tflite"
        if not (paths.train_dir(name) / "model.keras").exists() or not files.exists():
            log.info("%s: not trained and exported yet, skipped", name)
            continue
        splits = datasets.load(exp.dataset, exp.training.validation_percent)
        task = tasks.get(config.task_for(exp.architecture, splits.task), exp.architecture)
        x, _ = task.arrays(splits.test, limit=1)
        edge = task.exporter()(keras.models.load_model(paths.train_dir(name) / "model.keras"),
                               exp, task, splits, exp.export.variants)
        keras_ms = edge.keras_latency_ms(x, RUNS)
        row = {"experiment": name, "keras ms": keras_ms}
        for variant in exp.export.variants:
            step = edge.one_step(edge.files(files, variant), x)
            ms = tflite.median_latency_ms(lambda _, step=step: step(), None, RUNS)
            row[f"{variant} ms"] = ms
            row[f"{variant} speed-up"] = keras_ms / ms
            point = edge.one_point(files, variant) if hasattr(edge, "one_point") else None
            if point is not None:   # a forecaster: one point through its step model, the state carried
                step_ms = tflite.median_latency_ms(lambda _, point=point: point(), None, RUNS)
                streamed.append({"experiment": name, "variant": variant, "W": x.shape[1], "window ms": ms,
                                 "step ms": step_ms, "window / step": ms / step_ms})
        rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(streamed)


def wall_seconds(*cmd: str, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, cwd=paths.ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


OVERHEAD_ROUNDS = 3
OVERHEAD_EXPERIMENTS = {"cnn": 10_000, "jv_lstm": None}   # name: training examples (None: all)


def overhead(params: config.Params) -> pd.DataFrame:
    """Seconds per epoch of the train stage's path and of a bare Keras fit, interleaved."""
    import os
    import tempfile

    import mlflow

    rows = []
    before = os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["MLFLOW_TRACKING_URI"] = uri = f"sqlite:///{scratch}/mlflow.db"
        mlflow.MlflowClient(uri).create_experiment("bench", artifact_location=(Path(scratch) / "artifacts").as_uri())
        try:
            rows = [_overhead(params, name, examples, Path(scratch)) for name, examples in OVERHEAD_EXPERIMENTS.items()]
        finally:
            if before is None:
                os.environ.pop("MLFLOW_TRACKING_URI")
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before
    return pd.DataFrame(rows)


def _overhead(params: config.Params, name: str, examples: int | None, scratch: Path) -> dict:
    from pipelines import stage, training

    exp = params.experiments[name]
    exp = exp.model_copy(update={"training": exp.training.model_copy(update={
        "epochs": 2, "max_train_examples": examples, "early_stopping_patience": 0})})
    pipeline, bare = [], []
    for round_ in tqdm(range(OVERHEAD_ROUNDS), desc=f"overhead {name}"):
        context = stage.context(name, exp, scratch / f"{name}-{round_}", mlflow_experiment="bench")
        pipeline.append(training.fit(context)["seconds_per_epoch"])
        bare.append(bare_keras_seconds_per_epoch(context))
    return {"experiment": name, "pipeline s/epoch": statistics.median(pipeline),
            "bare Keras s/epoch": statistics.median(bare),
            "overhead": statistics.median(pipeline) / statistics.median(bare) - 1}


def bare_keras_seconds_per_epoch(context) -> float:
    """The same builder, data, batches and optimizer as `training.fit`, in a plain `fit`."""
    from pipelines import training

    exp, splits, task = context.experiment, context.splits, context.task
    train_split = splits.train.take(exp.training.max_train_examples) if exp.training.max_train_examples \
        else splits.train
    train_ds = task.batches(train_split, exp.training.batch_size, shuffle_buffer=exp.training.shuffle_buffer,
                            seed=exp.seed)
    val_ds = task.batches(splits.validation, exp.training.batch_size)
    steps = math.ceil(training._count(train_split) / exp.training.batch_size)   # not by reading it: no warm cache
    model = models.build(exp.architecture, task.input_shape(splits), task.head(splits),
                         config.hyperparameters(exp), dtype=task.input_dtype)
    model.compile(optimizer=training.make_optimizer(exp.training, steps), loss=task.loss, metrics=list(task.metrics))
    started = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=exp.training.epochs, verbose=0)
    return (time.perf_counter() - started) / exp.training.epochs


def settings_ratios() -> pd.DataFrame:
    """`pipelines.gpu_check` under each backend here: the ratios of its settings."""
    import json
    import os
    import sys
    import tempfile

    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        for backend in ("tensorflow", "jax"):
            done = subprocess.run([sys.executable, "-m", "pipelines.gpu_check", "--out", f"{scratch}/{backend}",
                                   "--seconds", "5"], cwd=paths.ROOT, capture_output=True, text=True,
                                  env={**os.environ, "KERAS_BACKEND": backend})
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise StageError(f"pipelines.gpu_check under {backend} failed: {last}")
            figures[backend] = json.loads(Path(scratch, backend, "gpu_check.json").read_text())["results"]
    rows = []
    for model, tf_rows in figures["tensorflow"].items():
        speed = {(b, s): figures[b][model][s]["examples_per_second"] for b in figures for s in tf_rows}
        rows += [{"model": model, "comparison": "XLA on / off (TensorFlow, float32)",
                  "ratio": speed["tensorflow", "float32 + XLA"] / speed["tensorflow", "float32"]},
                 {"model": model, "comparison": "mixed_bfloat16 / float32 (TensorFlow)",
                  "ratio": speed["tensorflow", "mixed_bfloat16"] / speed["tensorflow", "float32"]},
                 {"model": model, "comparison": "JAX / TensorFlow (float32, each backend's XLA setting: on / off)",
                  "ratio": speed["jax", "float32 + XLA"] / speed["tensorflow", "float32"]}]
    return pd.DataFrame(rows)


def main() -> None:
    params = config.load()
    runtime.setup(0)
    reservoir = esn_summary(esn_against_reservoirpy())
    table, streamed = inference(params)
    pipeline = pd.DataFrame([{"command": "dvc repro (nothing to do)", "median s": wall_seconds("dvc", "repro")},
                             {"command": "dvc status", "median s": wall_seconds("dvc", "status")}])
    costs = overhead(params)
    ratios = settings_ratios()
    text = "\n\n".join([f"## Echo state network against reservoirpy (Mackey-Glass, {len(ESN_SEEDS)} seeds)",
                         reservoir.to_markdown(index=False, floatfmt=".4g"),
                         f"## Single-sample inference latency (median of {RUNS} runs; one decoder step for "
                         "seq2seq and language models)",
                        table.to_markdown(index=False, floatfmt=".3f") if len(table) else "(nothing exported)",
                        f"## Forecasters: one point through the step file (the state carried) against a window of "
                        f"W points through the window file (median of {RUNS} runs each)",
                        streamed.to_markdown(index=False, floatfmt=".3f") if len(streamed) else "(no step files)",
                        "## Pipeline", pipeline.to_markdown(index=False, floatfmt=".2f"),
                        f"## Training: the train stage against bare Keras (median of {OVERHEAD_ROUNDS} interleaved "
                        "rounds of 2 epochs)", costs.to_markdown(index=False, floatfmt=".3f"),
                        "## Training settings on this machine (examples per second, as ratios)",
                        ratios.to_markdown(index=False, floatfmt=".2f")]) + "\n"
    paths.OUTPUTS.mkdir(exist_ok=True)
    (paths.OUTPUTS / "bench.md").write_text(text)
    print(text)


if __name__ == "__main__":
    runtime.run_stage(main)
