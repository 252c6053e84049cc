"""DVC stage `export@<experiment>`: TFLite files checked against the Keras model.

    python -m pipelines.export <experiment>

The trained model is rebuilt from its registered builder with a fixed batch of 1
(recurrent layers then convert to builtin TFLite ops) and its weights copied, then
converted to each variant:

    float32        plain conversion, the parity reference
    dynamic_range  int8 weights, float activations
    float16        float16 weights
    int8           full-integer: int8 weights, activations, inputs and outputs,
                   calibrated on examples of the training split; recurrent models are
                   converted unrolled (TFLite's calibrator crashes on their loop ops)

Every variant is run with the LiteRT interpreter through the edge runner
(`edge/runner.py`, what a device runs) on the test split. Recorded per variant:
`tflite_<variant>_size_bytes`, `tflite_<variant>_latency_ms` (median single-sample; `keras_latency_ms` for the Keras
model as a compiled graph),
`tflite_<variant>_max_abs_diff` (against the Keras outputs) and
`tflite_<variant>_<metric>_delta` (headline metric change) in `export/metrics.json`;
the latencies, which differ per machine, in `export/timings.json` (outside DVC).
The stage fails, writing nothing, if any variant contains a Flex (select TF) op or the float32 file differs
from Keras by more than `export.float32_tolerance` (1e-4).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import statistics
import time

import keras
import mlflow
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import models
from edge.runner import TFLiteModel
from pipelines import config, paths, runtime, stage, tasks
from pipelines.runtime import StageError

log = logging.getLogger("archlab.export")
WARMUP_RUNS = 10


def fixed_batch_copy(model: keras.Model, exp: config.Experiment, head: models.registry.Head,
                     unroll: bool = False) -> keras.Model:
    """The same architecture and weights with the input's batch fixed to 1; `unroll`
    also unrolls the time loop of architectures that have one (an `unroll` setting)."""
    hyperparameters = config.hyperparameters(exp)
    if unroll and "unroll" in type(hyperparameters).model_fields:
        hyperparameters = hyperparameters.model_copy(update={"unroll": True})
    copy = models.build(exp.architecture, model.input_shape[1:], head, hyperparameters, batch_size=1)
    copy.set_weights(model.get_weights())
    return copy


def convert(model: keras.Model, variant: str, representative: np.ndarray | None = None) -> bytes:
    """Convert with builtin ops only; a model that needs Flex ops fails here."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative is None:
            raise ValueError("int8 conversion needs representative examples")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif variant != "float32":
        raise ValueError(f"unknown TFLite variant {variant!r}; known: {', '.join(config.VARIANTS)}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel
            return converter.convert()
    except Exception as e:  # the converter raises several unrelated types
        text = str(e)
        needs = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
        if needs:
            raise StageError(f"TFLite {variant} conversion needs non-builtin (Flex) ops "
                             f"{', '.join(needs)}; the plain LiteRT interpreter cannot run them") from e
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise StageError(f"TFLite {variant} conversion failed: {first}") from e


def flex_ops(model: TFLiteModel) -> list[str]:
    return [op for op in model.op_names() if op.startswith("Flex") or op == "CUSTOM"]


def median_latency_ms(predict_one, x: np.ndarray, runs: int) -> float:
    for _ in range(WARMUP_RUNS):
        predict_one(x)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        predict_one(x)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def keras_predict_one(model: keras.Model):
    """Single-sample Keras inference as a compiled TensorFlow graph (traced on first call;
    eager calls would time Python running the recurrent loop step by step)."""
    graph = tf.function(lambda x: model(x, training=False))
    return lambda x: graph(x[None])


def check_parity(variant: str, max_abs_diff: float, tolerance: float) -> None:
    """The float32 gate: the exported file must compute what the Keras model computes."""
    if variant == "float32" and not max_abs_diff <= tolerance:
        raise StageError(f"float32 TFLite outputs differ from Keras by {max_abs_diff:.3g} "
                         f"> export.float32_tolerance {tolerance:g}")


def export(name: str, params: config.Params) -> dict[str, float]:
    context = stage.open_experiment(name, params)
    exp, splits, task = context.experiment, context.splits, context.task
    settings = exp.export
    model = stage.trained_model(name)
    edge_model = fixed_batch_copy(model, exp, task.head(splits))
    int8_model = fixed_batch_copy(model, exp, task.head(splits), unroll=True) if "int8" in settings.variants else None
    representative, _ = tasks.arrays(splits.train, task, limit=settings.representative_examples)
    x_test, y_test = tasks.arrays(splits.test, task, limit=settings.parity_examples)
    reference = model.predict(x_test, batch_size=256, verbose=0)
    reference_score = task.score(reference, y_test)
    metrics: dict[str, float] = {f"keras_{task.headline}": reference_score,
                                 "parity_examples": int(len(x_test))}
    timings = {"keras_latency_ms": median_latency_ms(keras_predict_one(edge_model), x_test[0],
                                                     settings.latency_runs)}
    with runtime.atomic_dir(paths.export_dir(name)) as out:
        (out / "tflite").mkdir()
        for variant in settings.variants:
            path = out / "tflite" / f"{variant}.tflite"
            # int8 calibration crashes on TFLite's recurrent loop ops: int8 files are unrolled
            source = int8_model if variant == "int8" else edge_model
            path.write_bytes(convert(source, variant, representative))
            tflite = TFLiteModel(path)
            flex = flex_ops(tflite)
            if flex:
                raise StageError(f"TFLite {variant} export uses non-builtin ops {flex}; "
                                 "the plain LiteRT interpreter cannot run it")
            outputs = np.stack([tflite.predict_one(x) for x in
                                tqdm(x_test, desc=f"{name} {variant}", unit="ex", leave=False)])
            diff = float(np.max(np.abs(outputs - reference)))
            check_parity(variant, diff, settings.float32_tolerance)
            prefix = f"tflite_{variant}"
            metrics[f"{prefix}_size_bytes"] = path.stat().st_size
            timings[f"{prefix}_latency_ms"] = median_latency_ms(tflite.predict_one, x_test[0],
                                                                settings.latency_runs)
            metrics[f"{prefix}_max_abs_diff"] = diff
            metrics[f"{prefix}_{task.headline}_delta"] = task.score(outputs, y_test) - reference_score
            log.info("%s %s: %d bytes, %.3f ms, max |diff| %.2e, %s delta %+.4f", name, variant,
                     metrics[f"{prefix}_size_bytes"], timings[f"{prefix}_latency_ms"], diff,
                     task.headline, metrics[f"{prefix}_{task.headline}_delta"])
        if splits.class_names:
            (out / "tflite" / "labels.txt").write_text("\n".join(splits.class_names) + "\n")
        runtime.write_json(out / "metrics.json", metrics)
        runtime.write_json(out / paths.TIMINGS, timings)
        with stage.mlflow_run(context, "export"):
            mlflow.log_metrics({**metrics, **timings})
            mlflow.log_artifacts(str(out / "tflite"), "tflite")
    return {**metrics, **timings}


if __name__ == "__main__":
    stage.cli(export, "Export one experiment of params.yaml to TFLite, checked against Keras.")
