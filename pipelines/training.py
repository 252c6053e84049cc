"""The one training path of every architecture (the `train` stage, the study, the sweep).

The tf.data pipeline (cache, shuffle, batch, prefetch), Keras `fit` with its progress bar,
the validation split (the tail of the training split) with early stopping, the MLflow run,
and (for the train stage) a backup of the training state each epoch that a killed run
resumes from (`pipelines/resume.py`). An architecture fitted in closed form (`Architecture.fit`) is fitted
first; gradient descent follows only if the architecture says it must
(`Architecture.trains_by_gradient`), else its loss on both splits is the history's one row.

Writes into `context.train_dir`: `model.keras`, `history.csv`, `metrics.json`,
`learning_curves.png` (DVC outputs, the same bytes for the same seed) and, outside DVC
(see `.dvcignore`), `timings.json`, `machine.json` (the machine's
fingerprint) and `run.json` (the MLflow run the later stages add to).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.keras import MlflowCallback

import models
from pipelines import config, paths, plots, resume, runtime, stage, tracking
from pipelines.runtime import StageError

log = logging.getLogger("archlab.train")
# What compiles a model fitted in closed form: it never steps, but evaluate and the saved
# file want an optimizer.
CLOSED_FORM = config.Training(epochs=1, batch_size=1, learning_rate=0.001)


def make_optimizer(training: config.Training, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer with its learning rate (constant, or cosine-annealed to 0 over all
    epochs) and gradient clipping."""
    learning_rate = training.learning_rate
    if training.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            training.learning_rate, decay_steps=training.epochs * steps_per_epoch)
    kwargs = {"learning_rate": learning_rate, "name": "optimizer"}  # a fixed name: reproducible files
    if training.clipnorm is not None:
        kwargs["clipnorm"] = training.clipnorm
    if training.clipvalue is not None:
        kwargs["clipvalue"] = training.clipvalue
    return keras.optimizers.get({"class_name": training.optimizer, "config": kwargs})


def fit(context: stage.Context, *, resumable: bool = True) -> dict[str, float]:
    """Train the context's experiment into `context.train_dir`; its metrics. `resumable`:
    back the training state up each epoch in `context.root / "backup"` and resume from a
    backup found there (the sweeps, whose runs live in a staging folder, have no use for it)."""
    name = context.name
    exp, splits, task = context.experiment, context.splits, context.task
    arch = models.get(exp.architecture)
    hyperparameters = config.hyperparameters(exp)
    gradient = arch.trains_by_gradient(hyperparameters)
    fitting = exp.training   # batch size, validation split, training examples, backend, precision
    training = fitting if gradient else CLOSED_FORM.model_copy(update={k: getattr(fitting, k) for k in config.FITTING})
    if keras.backend.backend() != training.backend:
        raise StageError(f"training.backend is {training.backend} but Keras runs {keras.backend.backend()}; "
                         f"start the stage with KERAS_BACKEND={training.backend}")
    train_split = splits.train
    if fitting.max_train_examples:
        train_split = train_split.take(fitting.max_train_examples)
    train_examples = _count(train_split)   # a mocked catalog dataset's is unknown: counted once
    train_ds = task.batches(train_split, training.batch_size, shuffle_buffer=training.shuffle_buffer,
                            seed=exp.seed, repeat="examples" if training.steps_per_epoch else "epochs") \
        if gradient else None
    val_ds = task.batches(splits.validation, fitting.batch_size)
    steps_per_epoch = training.steps_per_epoch or math.ceil(train_examples / fitting.batch_size)

    strategy = distribution(training)
    with runtime.dtype_policy(training.precision), strategy.scope():
        model = models.build(exp.architecture, task.input_shape(splits), task.head(splits), hyperparameters,
                             dtype=task.input_dtype)
        model.compile(optimizer=make_optimizer(training, steps_per_epoch), loss=task.loss,
                      metrics=list(task.metrics), steps_per_execution=training.steps_per_execution,
                      jit_compile="auto" if training.jit_compile is None else training.jit_compile)
    model.summary(print_fn=log.info)

    with runtime.atomic_dir(context.train_dir) as out:
        with stage.mlflow_run(context, "train", run_dir=out):
            tracking.record_run(out, task.name)
            mlflow.log_params(tracking.flat_params(exp))
            mlflow.log_params({"num_parameters": model.count_params(), "train_examples": train_examples})
            mlflow.set_tags(tracking.training_tags(model, strategy.num_replicas_in_sync))
            tracking.log_dataset(exp.dataset, {"train": train_examples, "validation": _known(splits.validation),
                                               "test": _known(splits.test)})
            started = time.perf_counter()
            if arch.fit is not None:  # closed-form parts first (reservoir computing: ridge readout)
                inputs, targets = task.arrays(train_split)
                arch.fit(model, inputs, targets, hyperparameters,
                         stream=task.training_stream(splits, fitting.max_train_examples))
            if gradient:
                with strategy.scope():
                    history, resumed = _descend(model, train_ds, val_ds, training, steps_per_epoch, out,
                                                context.root / "backup" if resumable else None, _backup_key(exp))
                seconds = time.perf_counter() - started
            else:
                seconds, resumed = time.perf_counter() - started, 0
                model.optimizer.build(model.trainable_variables)  # saved like a trained model's
                history = closed_form_history(model, task.batches(train_split, fitting.batch_size), val_ds,
                                              out / "history.csv")
                mlflow.log_metrics({k: v[0] for k, v in history.items()}, step=0)
            losses = history.get("loss", [])
            if not losses or not all(math.isfinite(v) for v in losses):
                raise StageError(f"training diverged (loss {losses[-1] if losses else 'missing'} "
                                 f"at epoch {len(losses)}); lower training.learning_rate or set "
                                 "training.clipnorm")
            runtime.save_keras(model, out / "model.keras")
            curves = pd.read_csv(out / "history.csv")
            plots.learning_curves(curves, out / "learning_curves.png", f"{name}: {exp.architecture} on {exp.dataset}")
            best = int(np.argmin(history["val_loss"]))
            metrics = {"epochs_run": len(losses) if gradient else 0, "best_epoch": best + 1 if gradient else 0,
                       "best_val_loss": float(history["val_loss"][best]),
                       "num_parameters": int(model.count_params())}
            timings = {"train_seconds": round(seconds, 3), "peak_memory_mb": round(_peak_memory_mb(), 1)}
            if gradient and len(losses) > resumed:   # the epochs this process ran (after a resume)
                ran = len(losses) - resumed
                seen = ran * (training.steps_per_epoch * training.batch_size if training.steps_per_epoch
                              else train_examples)
                timings.update(seconds_per_epoch=round(seconds / ran, 3),
                               train_examples_per_second=round(seen / seconds, 1))
            elif not gradient:
                timings["train_examples_per_second"] = round(train_examples / max(seconds, 1e-9), 1)
            runtime.write_json(out / "metrics.json", metrics)
            runtime.write_json(out / paths.TIMINGS, timings)
            runtime.write_json(out / paths.MACHINE, tracking.fingerprint())
            mlflow.log_metrics({**metrics, **timings})
            mlflow.log_artifact(str(out / "learning_curves.png"), "plots")
            mlflow.log_artifact(str(out / "history.csv"), "history")
            example = tf.nest.map_structure(lambda x: x.numpy()[:2], next(iter(val_ds.take(1)))[0])
            if isinstance(example, tuple):   # several inputs (seq2seq): by the model's input names
                example = {i.name: x for i, x in zip(model.inputs, example)}
            tracking.log_keras_model(model, example)
    if resumable:
        resume.remove(context.root / "backup")   # the outputs are in place: nothing to resume
    log.info("trained %s in %.1f s (%d epochs)", name, seconds, len(losses))
    return {**metrics, **timings}


def distribution(training: config.Training):
    """The tf.distribute strategy of `training.distribution`: the default (one device), or
    MirroredStrategy over the local GPUs (the first `training.devices` of them; all of them,
    with a warning, where there are fewer), or over the logical CPU devices (`runtime.setup`
    splits the CPU into `training.devices`) where there is no GPU. The batch size stays the
    global one, split among the replicas; the run's `devices` tag says how many there were."""
    if training.distribution == "none":
        return tf.distribute.get_strategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if training.devices and gpus and len(gpus) < training.devices:
        log.warning("training.devices is %d but this machine has %d GPU(s): mirrored over those",
                    training.devices, len(gpus))
    devices = gpus[:training.devices] if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
    return _mirrored(tuple(devices))


@functools.cache
def _mirrored(devices: tuple[str, ...]):
    """One MirroredStrategy per set of devices in a process: a second one over the same
    devices numbers its collective ops from the same keys, and its all-reduces meet the
    first one's (`Shape mismatch in the collective instance`)."""
    log.info("MirroredStrategy over %s", ", ".join(devices))
    return tf.distribute.MirroredStrategy(list(devices))


def _count(split) -> int:
    n = int(split.cardinality())
    return n if n >= 0 else sum(1 for _ in split)


def _known(split) -> int | str:
    """A split's size where tf.data knows it (not counted: that would read the split)."""
    n = int(split.cardinality())
    return n if n >= 0 else "unknown"


def _peak_memory_mb() -> float:
    """The process's peak resident memory (Linux reports kB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _descend(model: keras.Model, train_ds, val_ds, training: config.Training, steps_per_epoch: int, out,
             backup: Path | None, key: str) -> tuple[dict[str, list[float]], int]:
    """Gradient descent with Keras `fit`: NaN stop, the CSV history, early stopping on the
    validation loss (if `early_stopping_patience`), MLflow curves and, unless `backup` is None,
    a backup of the training state each epoch in `backup`, which a rerun resumes from
    (`pipelines/resume.py`). The whole history, and the epochs of it the backup gave."""
    stopping = resume.ResumableEarlyStopping(monitor="val_loss", patience=training.early_stopping_patience,
                                             restore_best_weights=True, verbose=1) \
        if training.early_stopping_patience else None
    state = resume.restore(backup, key, model, stopping) if backup is not None else None
    if state is not None:
        shutil.copyfile(state.history_csv, out / "history.csv")
        # the batches the epochs before drew: Keras pulls `steps_per_execution` at a time
        executions = math.ceil(steps_per_epoch / training.steps_per_execution)
        train_ds = train_ds.skip(state.epoch * executions * training.steps_per_execution)
        for epoch, values in enumerate(zip(*state.history.values())):   # the run's curves from epoch 0
            mlflow.log_metrics(dict(zip(state.history, values)), step=epoch)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=state is not None),
        *([stopping] if stopping else []),
        *([resume.Backup(backup, key, out / "history.csv", stopping, state.history if state else None)]
          if backup is not None else []),
    ]
    initial_epoch = 0 if state is None else training.epochs if state.stopped else state.epoch
    history = model.fit(train_ds, validation_data=val_ds, epochs=training.epochs,
                        steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch,
                        callbacks=[*callbacks, MlflowCallback()], shuffle=False,   # tf.data shuffles
                        verbose=2 if not sys.stdout.isatty() else 1).history
    earlier = state.history if state else {}
    return {k: [*earlier.get(k, []), *history.get(k, [])] for k in dict.fromkeys([*earlier, *history])}, \
        state.epoch if state else 0


def _backup_key(exp: config.Experiment) -> str:
    """What a training backup is of: the experiment's settings, its data, the Keras backend."""
    settings = json.dumps(tracking.flat_params(exp), sort_keys=True, default=str)
    return hashlib.sha256(f"{settings}|{tracking.dataset_hash(exp.dataset)}|{keras.backend.backend()}".encode()
                          ).hexdigest()[:16]


def closed_form_history(model: keras.Model, train_ds, val_ds, path) -> dict[str, list[float]]:
    """A model fitted in closed form has no epochs: its loss and metrics on the training
    and validation splits, as one row of `history.csv` (epoch 0)."""
    history = {}
    for prefix, ds in (("", train_ds), ("val_", val_ds)):
        results = model.evaluate(ds, verbose=0, return_dict=True)
        history.update({prefix + k: [float(v)] for k, v in results.items() if k != "compile_metrics"})
    pd.DataFrame({"epoch": [0], **history}).to_csv(path, index=False)
    return history
