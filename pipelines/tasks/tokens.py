"""What the two token tasks share (sequence to sequence, language modelling): int32 token
ids in, a softmax over the vocabulary at every step out, trained with teacher forcing (the
decoder reads the true previous token); they generate through step models
(`models.seq2seq.step_models`) and go to TFLite as those step models
(`exporters.steps`), with `generation.json` for the edge runner."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from models import seq2seq
from models.registry import Head
from pipelines.tasks.base import Task


def text(ids, vocabulary) -> str:
    """Token ids as text, the special tokens (padding, start, end) left out."""
    return "".join(vocabulary[i] for i in ids if i > seq2seq.END)


class TokenTask(Task):
    loss = "sparse_categorical_crossentropy"
    tokens = True
    no_int8 = "step models, which have no int8 variant"

    def head(self, splits) -> Head:
        return Head(len(splits.vocabulary), per_step=True)

    def exporter(self) -> type:
        from pipelines.exporters.steps import StepModels

        return StepModels

    def edge_teacher_forced(self, generator, inputs, desc: str) -> np.ndarray:
        """The TFLite decoder (`edge.runner.Generator`) stepped over each example's tokens."""
        sources, tokens = inputs if isinstance(inputs, tuple) else (None, inputs)
        return np.stack([generator.teacher_forced(None if sources is None else sources[i], tokens[i])
                         for i in tqdm(range(len(tokens)), desc=desc, unit="ex", leave=False)])

    def edge_predict(self, generator, inputs, teacher_forced: np.ndarray) -> np.ndarray:
        """The task's outputs from the TFLite step models."""
        raise NotImplementedError

    def edge_spec(self, vocabulary: list[str], inputs) -> dict:
        """`generation.json`: what the edge runner needs to turn text into tokens and back,
        and to start and stop decoding."""
        raise NotImplementedError
