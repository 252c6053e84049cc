"""What every export strategy shares: conversion to TFLite with builtin ops only, the check
that a file has no Flex op, the float32 parity gate, single-sample latency."""

from __future__ import annotations

import contextlib
import io
import re
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from models.registry import inference_graph
from pipelines.config import VARIANTS
from pipelines.runtime import StageError

WARMUP_RUNS = 10


def convert(model: keras.Model, variant: str, representative: np.ndarray | None = None) -> bytes:
    """Convert with builtin ops only; a model that needs Flex ops fails here.

        float32        plain conversion, the parity reference
        dynamic_range  int8 weights, float activations
        float16        float16 weights
        int8           full-integer: int8 weights, activations, inputs and outputs,
                       calibrated on `representative` examples
    """
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
        raise ValueError(f"unknown TFLite variant {variant!r}; known: {', '.join(VARIANTS)}")
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


def flex_ops(model) -> list[str]:
    """The non-builtin operators of a loaded TFLite model (`edge.runner` classes)."""
    return [op for op in model.op_names() if op.startswith("Flex") or op == "CUSTOM"]


def check_builtin(model, path) -> None:
    """Refuse a file that the plain LiteRT interpreter cannot run; the error names it."""
    flex = flex_ops(model)
    if flex:
        raise StageError(f"TFLite export {path.name} uses non-builtin ops {flex}; "
                         "the plain LiteRT interpreter cannot run it")


def check_parity(variant: str, max_abs_diff: float, tolerance: float) -> None:
    """The float32 gate: the exported file must compute what the Keras model computes."""
    if variant == "float32" and not max_abs_diff <= tolerance:
        raise StageError(f"float32 TFLite outputs differ from Keras by {max_abs_diff:.3g} "
                         f"> export.float32_tolerance {tolerance:g}")


def median_latency_ms(predict_one, x, runs: int) -> float:
    """The median wall time of `predict_one(x)` over `runs` calls, after a warm-up."""
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
    graph = inference_graph(model)
    return lambda x: graph(x[None])


def write_parts(parts: dict[str, keras.Model], variant: str, folder) -> list:
    """Each named part converted to `<folder>/<variant>_<name>.tflite`; the files, in order."""
    files = []
    for name, part in parts.items():
        files.append(folder / f"{variant}_{name}.tflite")
        files[-1].write_bytes(convert(part, variant))
    return files


def fixed_batch(part: keras.Model) -> keras.Model:
    """A model of one input with its batch fixed to 1, sharing `part`'s layers."""
    inputs = keras.Input(part.input_shape[1:], batch_size=1, name=part.inputs[0].name)
    return keras.Model(inputs, part(inputs), name=part.name)
