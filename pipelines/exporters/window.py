"""A window model's export (one model, input -> output, the batch fixed to 1), which
`single.SingleModel` (most architectures) and `stream.Streaming` (forecasters, beside their
step models) both are.

The trained model is rebuilt from its registered builder with a batch of 1 (recurrent
layers then convert to builtin TFLite ops) and its weights copied; int8 files are built
unrolled (TFLite's int8 calibrator crashes on recurrent loop ops).
"""

from __future__ import annotations

import keras
import numpy as np
from tqdm import tqdm

import models
from edge.runner import TFLiteModel
from pipelines import config
from pipelines.exporters import tflite


def fixed_batch_copy(model: keras.Model, exp: config.Experiment, head, unroll: bool = False,
                     input_shape: tuple | None = None) -> keras.Model:
    """The same architecture and weights with the input's batch fixed to 1 (and its shape
    to `input_shape` if given: a variable length fixed); `unroll` also unrolls the time loop
    of architectures that have one (an `unroll` setting)."""
    hyperparameters = config.hyperparameters(exp)
    if unroll and "unroll" in type(hyperparameters).model_fields:
        hyperparameters = hyperparameters.model_copy(update={"unroll": True})
    copy = models.build(exp.architecture, input_shape or model.input_shape[1:], head, hyperparameters,
                        batch_size=1, dtype=model.inputs[0].dtype)
    copy.set_weights(model.get_weights())
    return copy


class WindowModel:
    """`<variant>.tflite`; parity: its outputs on the test inputs against Keras's."""

    def __init__(self, model: keras.Model, exp: config.Experiment, task, splits, variants):
        shape = task.export_shape(splits)
        self.edge = fixed_batch_copy(model, exp, task.head(splits), input_shape=shape)
        self.int8 = fixed_batch_copy(model, exp, task.head(splits), unroll=True, input_shape=shape) \
            if "int8" in variants else None

    def keras_latency_ms(self, x: np.ndarray, runs: int) -> float:
        sample = padded(x[:1], self.edge.input_shape[1:])[0]
        return tflite.median_latency_ms(tflite.keras_predict_one(self.edge), sample, runs)

    def write(self, variant: str, folder, representative) -> list:
        path = folder / f"{variant}.tflite"
        path.write_bytes(tflite.convert(self.int8 if variant == "int8" else self.edge, variant, representative))
        return [path]

    def run(self, files, x: np.ndarray, reference: np.ndarray, desc: str):
        """(outputs, max abs diff against `reference`)."""
        model = TFLiteModel(files[0])
        tflite.check_builtin(model, files[0])
        x = padded(x, model.sample_shape)
        outputs = np.stack([model.predict_one(s) for s in tqdm(x, desc=desc, unit="ex", leave=False)])
        return outputs, float(np.max(np.abs(outputs - reference)))

    @staticmethod
    def files(folder, variant: str) -> list:
        return [folder / f"{variant}.tflite"]

    @staticmethod
    def one_step(files, x):
        """What the latency times: one sample through the file."""
        model = TFLiteModel(files[0])
        sample = padded(x[:1], model.sample_shape)[0]
        return lambda: model.predict_one(sample)


def padded(x: np.ndarray, sample_shape: tuple) -> np.ndarray:
    """Samples `x` (N, ...) zero-padded at the end of each axis to `sample_shape` (inputs cut
    to their longest example, for a file whose input has the dataset's full length)."""
    widths = [(0, 0), *((0, int(want) - have) for want, have in zip(sample_shape, x.shape[1:]))]
    return np.pad(x, widths) if any(w for _, w in widths[1:]) else x
