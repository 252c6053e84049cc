"""Architecture registry: one name, one builder, one hyperparameter schema.

    @register("mlp", hyperparameters=MLPParams, tasks=("image_classification",))
    def build_mlp(inputs: keras.KerasTensor, head: Head, params: MLPParams) -> keras.Model: ...

The task decides the model's output through `head` (units and activation: softmax
over classes, linear for regression; `per_step` for one output per time step), so an
architecture serves every task it declares.

The registered name is the `architecture` value in `params.yaml`. Looking up an
unknown name raises a `ValueError` that lists the known ones. `FAMILIES` says which module
registers each name, so that looking one up imports that family alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
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

    def layer(self, name: str = "outputs") -> keras.layers.Dense:
        """The output layer (applied to a sequence, Dense acts at every step), in float32
        under a mixed precision policy too (`OUTPUT_DTYPE`)."""
        return keras.layers.Dense(self.units, activation=self.activation, dtype=OUTPUT_DTYPE, name=name)


# What a model's outputs compute in under any policy: a softmax or a loss in 16 bits loses
# the precision the mixed policies keep their variables in.
OUTPUT_DTYPE = "float32"


Builder = Callable[[keras.KerasTensor, Head, Hyperparameters], keras.Model]
# A closed-form fit (reservoir computing's ridge readout): (model, inputs, targets,
# hyperparameters, stream=Stream | None) -> None; it runs before any gradient training.
Fit = Callable[..., None]


@dataclass(frozen=True)
class Stream:
    """A forecasting task's training series read as one stream, for a closed-form fit in the
    continuous regime: the points in order (T, channels), the next value of the forecast
    column after each (T,), and which of those are training targets (T,) bool (the
    validation's are not)."""

    points: np.ndarray
    targets: np.ndarray
    fitted: np.ndarray
# Step models of a generative architecture (seq2seq, language model): (trained model,
# batch size) -> {"encoder": ..., "decoder": ...}, what inference and TFLite run.
Steps = Callable[..., dict]
Evaluate = Callable[..., tuple[dict, dict]]

# The module of `models/` that registers each architecture: `get` imports that one module,
# not every family, so a stage imports (and DVC tracks) only its own architecture's code.
# `register` refuses a name that is missing here or registered from another module.
FAMILIES: dict[str, str] = {
    "mlp": "mlp",
    "cnn": "cnn",
    "simple_rnn": "recurrent", "lstm": "recurrent", "gru": "recurrent",
    "bi_simple_rnn": "recurrent", "bi_lstm": "recurrent", "bi_gru": "recurrent",
    "esn": "esn",
    "seq2seq": "seq2seq", "rnn_lm": "seq2seq",
    "autoencoder": "autoencoder", "deep_autoencoder": "autoencoder", "denoising_autoencoder": "autoencoder",
    "conv_autoencoder": "autoencoder", "vae": "autoencoder",
    "recursive_net": "recursive", "tree_lstm": "recursive",
}


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Builder
    hyperparameters: type[Hyperparameters]
    tasks: tuple[str, ...]
    description: str
    fit: Fit | None = None
    steps: Steps | None = None
    # (hyperparameters) -> whether gradient descent trains the model; False: `fit` alone
    # does (a closed-form model takes no epochs, optimizer or learning rate)
    gradient: Callable[[Hyperparameters], bool] = lambda hyperparameters: True
    # The architecture's own test scores beside its task's: (trained model, test inputs) ->
    # (metrics, {picture name: {row title: images}}), e.g. a VAE's ELBO and its samples
    evaluate: Evaluate | None = None
    # True: the model reads a tree as node arrays (N, 1 + A), `models/recursive.py`; a task
    # whose examples are trees gives the other architectures its sequence view (the tokens)
    trees: bool = False
    # (hyperparameters) -> the tasks it does with them, if fewer than `tasks`
    serves: Callable[[Hyperparameters], tuple[str, ...]] | None = None

    def tasks_with(self, hyperparameters: Hyperparameters) -> tuple[str, ...]:
        return self.tasks if self.serves is None else self.serves(hyperparameters)

    @property
    def module(self) -> str:
        return f"models.{FAMILIES[self.name]}"

    def trains_by_gradient(self, hyperparameters: Hyperparameters) -> bool:
        return self.gradient(hyperparameters)


_REGISTRY: dict[str, Architecture] = {}


def register(name: str, *, hyperparameters: type[Hyperparameters], tasks: tuple[str, ...],
             fit: Fit | None = None, steps: Steps | None = None,
             gradient: Callable[[Hyperparameters], bool] | None = None, evaluate: Evaluate | None = None,
             trees: bool = False, serves: Callable[[Hyperparameters], tuple[str, ...]] | None = None):
    """Register a builder under `name`; a name can be registered once, from the module
    `FAMILIES` names. `fit`, if given, fits the built model in closed form first; `gradient`
    tells for given hyperparameters whether gradient descent follows (default: always);
    `steps`, if given, splits a trained model into the step models that generate from it;
    `evaluate`, if given, scores the trained model in the architecture's own terms; `trees`:
    the model reads trees as node arrays; `serves`, if given, narrows `tasks` for given
    hyperparameters."""

    def decorator(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        if FAMILIES.get(name) is None or build.__module__ != f"models.{FAMILIES[name]}":
            raise ValueError(f"architecture {name!r} registered in {build.__module__}: list it in "
                             "models.registry.FAMILIES under its module")
        doc = (build.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Architecture(name, build, hyperparameters, tasks, doc[0] if doc else "", fit,
                                      steps, gradient or (lambda hyperparameters: True), evaluate, trees, serves)
        return build

    return decorator


def names() -> list[str]:
    return sorted(FAMILIES)


def get(name: str) -> Architecture:
    """The registered architecture `name`, its family's module imported on first use."""
    if name not in FAMILIES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(names())}")
    if name not in _REGISTRY:
        importlib.import_module(f"models.{FAMILIES[name]}")
    return _REGISTRY[name]


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


def precision(model: keras.Model) -> str:
    """The dtype policy a model computes in: its layers' mixed policy if any has one (the
    output layers stay float32), else float32."""
    mixed = {layer.dtype_policy.name for layer in model._flatten_layers(include_self=False)} - {"float32"}
    return min(mixed) if mixed else "float32"


def inference_graph(model: keras.Model):
    """`model(inputs, training=False)` compiled by the backend (a TensorFlow graph, or a
    `jax.jit` of the stateless call), traced on the first call: what timing and step-by-step
    generation run (an eager call would step recurrent loops in Python)."""
    if keras.backend.backend() == "jax":
        import jax

        call = jax.jit(lambda trainable, fixed, inputs: model.stateless_call(trainable, fixed, inputs,
                                                                              training=False)[0])
        return lambda inputs: call([v.value for v in model.trainable_variables],
                                   [v.value for v in model.non_trainable_variables], inputs)
    import tensorflow as tf

    return tf.function(lambda inputs: model(inputs, training=False))
