"""The export of a generative architecture (seq2seq, language model): its step models.

The encoder (seq2seq) and the one-step decoder (`registry.register(..., steps=...)`), each
a file `<variant>_<part>.tflite`, which the edge runner's generation loop reads with
`generation.json`. Parity compares the decoder stepped over the test tokens (teacher
forcing) with the Keras model; the task's outputs come from `task.edge_predict` (greedy
decoding for seq2seq). Latency is one decoder step. No int8 variant.
"""

from __future__ import annotations

import keras
import numpy as np

import models
from edge.runner import Generator
from models.registry import inference_graph
from pipelines import config
from pipelines.exporters import tflite
from pipelines.runtime import StageError


class StepModels:
    def __init__(self, model: keras.Model, exp: config.Experiment, task, splits, variants):
        if "int8" in variants:
            raise StageError(f"{exp.architecture} exports step models: int8 is not available "
                             "(export.variants: float32, dynamic_range, float16)")
        self.task = task
        self.parts = models.get(exp.architecture).steps(model, batch_size=1)

    def keras_latency_ms(self, x, runs: int) -> float:
        decoder = self.parts["decoder"]
        graph = inference_graph(decoder)
        inputs = [np.ones((1, 1), np.int32)] + [np.zeros(i.shape, np.float32) for i in decoder.inputs[1:]]
        return tflite.median_latency_ms(lambda _: graph(inputs), None, runs)

    def write(self, variant: str, folder, representative) -> list:
        return tflite.write_parts(self.parts, variant, folder)

    def run(self, files, x, reference: np.ndarray, desc: str):
        generator = self._generator(files)
        by_part = {f.stem.rsplit("_", 1)[1]: f for f in files}
        for name, part in (("decoder", generator.decoder), ("encoder", generator.encoder)):
            if part is not None:
                tflite.check_builtin(part, by_part[name])   # the error names the file at fault
        forced = self.task.edge_teacher_forced(generator, x, desc)
        return self.task.edge_predict(generator, x, forced), float(np.max(np.abs(forced - reference)))

    @staticmethod
    def _generator(files) -> Generator:
        by_part = {f.stem.rsplit("_", 1)[1]: f for f in files}
        return Generator(by_part["decoder"], by_part.get("encoder"))

    @staticmethod
    def files(folder, variant: str) -> list:
        return sorted(folder.glob(f"{variant}_*coder.tflite"))

    @classmethod
    def one_step(cls, files, x):
        """What the latency times: one decoder step."""
        generator = cls._generator(files)
        sources, tokens = x if isinstance(x, tuple) else (None, x)
        states = generator.start(None if sources is None else sources[0])
        return lambda: generator.step(int(tokens[0][0]), states)
