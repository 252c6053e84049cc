"""Architecture registry: one name, one builder, one hyperparameter schema.

    @register("mlp", hyperparameters=MLPParams, tasks=("image_classification",))
    def build_mlp(inputs: keras.KerasTensor, head: Head, params: MLPParams) -> keras.Model: ...

The task decides the model's output through `head` (units and activation: softmax
over classes, linear for regression; `per_step` for one output per time step), so an
architecture serves every task it declares.

The registered name is the `architecture` value in `params.yaml`. Looking up an
unknown name raises a `ValueError` that lists the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
from pydantic import BaseModel, ConfigDict


class Hyperparameters(BaseModel):
    """Base of every architecture's hyperparameter schema: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Head:
    """The output a task asks for: `units` of `activation`, once or at every time step."""

    units: int
    activation: str = "softmax"
    per_step: bool = False

    def layer(self) -> keras.layers.Dense:
        """The output layer (applied to a sequence, Dense acts at every step)."""
        return keras.layers.Dense(self.units, activation=self.activation, name="outputs")


Builder = Callable[[keras.KerasTensor, Head, Hyperparameters], keras.Model]
# A closed-form fit (reservoir computing's ridge readout): (model, inputs, targets,
# hyperparameters) -> whether gradient training must still follow.
Fit = Callable[..., bool]
# Step models of a generative architecture (seq2seq, language model): (trained model,
# batch size) -> {"encoder": ..., "decoder": ...}, what inference and TFLite run.
Steps = Callable[..., dict]


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Builder
    hyperparameters: type[Hyperparameters]
    tasks: tuple[str, ...]
    description: str
    fit: Fit | None = None
    steps: Steps | None = None


_REGISTRY: dict[str, Architecture] = {}


def register(name: str, *, hyperparameters: type[Hyperparameters], tasks: tuple[str, ...],
             fit: Fit | None = None, steps: Steps | None = None):
    """Register a builder under `name`; a name can be registered once. `fit`, if given,
    trains the built model in closed form before (or instead of) gradient descent; `steps`,
    if given, splits a trained model into the step models that generate from it."""

    def decorator(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        doc = (build.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Architecture(name, build, hyperparameters, tasks, doc[0] if doc else "", fit,
                                      steps)
        return build

    return decorator


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Architecture:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(names())}") from None


def build(name: str, input_shape: tuple, head: Head | int, hyperparameters: dict | Hyperparameters,
          batch_size: int | None = None, dtype: str = "float32") -> keras.Model:
    """Build a registered architecture; `batch_size` fixes the input's batch (TFLite export),
    `dtype` is the input's (int32 for token ids). An int `head` means that many softmax
    outputs (classification)."""
    arch = get(name)
    if not isinstance(hyperparameters, Hyperparameters):
        hyperparameters = arch.hyperparameters(**hyperparameters)
    if isinstance(head, int):
        head = Head(head)
    model = arch.build(keras.Input(shape=tuple(input_shape), batch_size=batch_size, dtype=dtype,
                                   name="inputs"),
                       head, hyperparameters)
    return model


def inference_graph(model: keras.Model):
    """`model(inputs, training=False)` as a compiled TensorFlow graph, traced on the first
    call: what timing and step-by-step generation run (an eager call would step recurrent
    loops in Python)."""
    import tensorflow as tf

    return tf.function(lambda inputs: model(inputs, training=False))
