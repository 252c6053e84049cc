"""The export of most architectures: one model, input -> output, with the batch fixed to 1.

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


def fixed_batch_copy(model: keras.Model, exp: config.Experiment, head, unroll: bool = False) -> keras.Model:
    """The same architecture and weights with the input's batch fixed to 1; `unroll`
    also unrolls the time loop of architectures that have one (an `unroll` setting)."""
    hyperparameters = config.hyperparameters(exp)
    if unroll and "unroll" in type(hyperparameters).model_fields:
        hyperparameters = hyperparameters.model_copy(update={"unroll": True})
    copy = models.build(exp.architecture, model.input_shape[1:], head, hyperparameters, batch_size=1)
    copy.set_weights(model.get_weights())
    return copy


class SingleModel:
    """`<variant>.tflite`; parity: its outputs on the test inputs against Keras's."""

    def __init__(self, model: keras.Model, exp: config.Experiment, task, splits, variants):
        self.edge = fixed_batch_copy(model, exp, task.head(splits))
        self.int8 = fixed_batch_copy(model, exp, task.head(splits), unroll=True) if "int8" in variants else None

    def keras_latency_ms(self, x: np.ndarray, runs: int) -> float:
        return tflite.median_latency_ms(tflite.keras_predict_one(self.edge), x[0], runs)

    def write(self, variant: str, folder, representative) -> list:
        path = folder / f"{variant}.tflite"
        path.write_bytes(tflite.convert(self.int8 if variant == "int8" else self.edge, variant, representative))
        return [path]

    def run(self, files, x: np.ndarray, reference: np.ndarray, desc: str):
        """(outputs, max abs diff against `reference`)."""
        model = TFLiteModel(files[0])
        tflite.check_builtin(model, files[0])
        outputs = np.stack([model.predict_one(s) for s in tqdm(x, desc=desc, unit="ex", leave=False)])
        return outputs, float(np.max(np.abs(outputs - reference)))

    @staticmethod
    def files(folder, variant: str) -> list:
        return [folder / f"{variant}.tflite"]

    @staticmethod
    def one_step(files, x):
        """What the latency times: one sample through the file."""
        model = TFLiteModel(files[0])
        return lambda: model.predict_one(x[0])
