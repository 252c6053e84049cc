"""Echo state networks (course notes, unit 5): reservoir computing.

A reservoir of `units` leaky-integrator neurons, its input weights W_in and sparse
recurrent weights W drawn at random from `seed` and never trained:

    x̃(t) = f(W_in u(t) + W x(t-1) + b)
    x(t)  = (1 - lr) x(t-1) + lr x̃(t)                 (reservoirpy's "internal" equation)

W has density `rc_connectivity` (N(0, 1) entries) rescaled to spectral radius `sr`; W_in
has density `input_connectivity` (±1 entries) times `input_scaling`; b is ±`bias` (0: no
bias, reservoirpy 0.4's default). Only the readout learns, y = W_out r + b_out, from a
representation r of the states:

    last          x(T), the state after the last real step (forecasting: the window's end)
    mean          the mean state over the real steps
    model_space   the reservoir model space (Bianchi et al. 2020): per series, the ridge
                  fit [W_s; b_s] of x(t+1) ≈ W_s x(t) + b_s, flattened (classification)

optionally after PCA of the states to `pca_components` dimensions (fitted on the
training states). The readout is `ridge`: ridge regression solved in closed form over
the collected representations (scikit-learn's `Ridge`: centred, intercept not
penalised, like reservoirpy's `Ridge`), with the first `warmup` steps of each sequence
discarded when the targets are per step; or `dense`: the same layer trained by gradient
descent through the common Keras path, the reservoir frozen. With `per_step`
heads the readout acts at every step (sequence in, sequence out, as reservoirpy runs).

The states a ridge readout is fitted on come from the `regime`: `windows`, each training
example read from a zero state (what the window model computes at test time), or
`continuous` (forecasting): the reservoir driven once through the whole training series,
every step after the first `warmup` a sample, as reservoirpy and Jaeger & Haas (2004) run
it; such a model is meant to run with its state carried (`models/streaming.py`).

Hyperparameters carry reservoirpy's names and, where it has them, its defaults.
The per-series model-space ridge is solved inside the model with Newton–Schulz
iterations (matrix products only), so the whole classifier converts to builtin TFLite ops.
"""

from __future__ import annotations

from typing import Literal

import keras
import numpy as np
from keras import layers, ops
from pydantic import Field, model_validator

from models.registry import Head, Hyperparameters, Stream, register

TASKS = ("forecasting", "sequence_classification", "sequence_regression")


@keras.saving.register_keras_serializable(package="archlab")
class ReservoirCell(layers.Layer):
    """One step of a leaky reservoir; wrap in `keras.layers.RNN`. Its weights are
    non-trainable and drawn from `seed`, so the same arguments give the same reservoir."""

    def __init__(self, units: int, sr: float = 1.0, lr: float = 1.0, input_scaling: float = 1.0,
                 input_connectivity: float = 0.1, rc_connectivity: float = 0.1, bias: float = 0.0,
                 activation: str = "tanh", seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.sr, self.lr = units, sr, lr
        self.input_scaling, self.bias = input_scaling, bias
        self.input_connectivity, self.rc_connectivity = input_connectivity, rc_connectivity
        self.activation = keras.activations.get(activation)
        self.activation_name = activation
        self.seed = seed
        self.state_size = units
        self.output_size = units

    def build(self, input_shape):
        w_in, w, b = reservoir_weights(input_shape[-1], self.units, sr=self.sr, input_scaling=self.input_scaling,
                                       input_connectivity=self.input_connectivity,
                                       rc_connectivity=self.rc_connectivity, bias=self.bias, seed=self.seed)
        self.input_kernel = self._fixed("input_kernel", w_in)
        self.recurrent_kernel = self._fixed("recurrent_kernel", w)
        self.bias_vector = self._fixed("bias", b)
        self.built = True

    def _fixed(self, name: str, value: np.ndarray):
        weight = self.add_weight(name=name, shape=value.shape, initializer="zeros", trainable=False)
        weight.assign(value.astype("float32"))
        return weight

    def call(self, inputs, states):
        previous = states[0]
        update = self.activation(ops.matmul(inputs, self.input_kernel)
                                 + ops.matmul(previous, self.recurrent_kernel) + self.bias_vector)
        state = (1.0 - self.lr) * previous + self.lr * update
        return state, [state]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "sr": self.sr, "lr": self.lr,
                "input_scaling": self.input_scaling, "input_connectivity": self.input_connectivity,
                "rc_connectivity": self.rc_connectivity, "bias": self.bias,
                "activation": self.activation_name, "seed": self.seed}


def reservoir_weights(inputs: int, units: int, *, sr: float, input_scaling: float, input_connectivity: float,
                      rc_connectivity: float, bias: float, seed: int) -> tuple[np.ndarray, ...]:
    """(W_in as (inputs, units), W as (units, units), b), float64, as reservoirpy draws
    them: exactly round(connectivity x size) non-zero entries at random places, N(0, 1)
    in W (then rescaled to spectral radius `sr`) and ±1 in W_in (times `input_scaling`)."""
    rng = np.random.default_rng(seed)
    w = _sparse(rng, (units, units), rc_connectivity, rng.standard_normal)
    radius = np.max(np.abs(np.linalg.eigvals(w)))
    if radius == 0:
        raise ValueError(f"rc_connectivity {rc_connectivity} left the {units}-unit reservoir without "
                         "recurrent cycles; raise it or add units")
    w_in = _sparse(rng, (inputs, units), input_connectivity, lambda n: rng.choice([-1.0, 1.0], n))
    b = bias * rng.choice([-1.0, 1.0], units)
    return input_scaling * w_in, w * (sr / radius), b


def _sparse(rng: np.random.Generator, shape: tuple[int, int], density: float, draw) -> np.ndarray:
    matrix = np.zeros(shape)
    count = max(1, int(round(density * matrix.size)))
    matrix.flat[rng.choice(matrix.size, count, replace=False)] = draw(count)
    return matrix


@keras.saving.register_keras_serializable(package="archlab")
class StateSummary(layers.Layer):
    """A fixed-size representation of a sequence of states: `last`, `mean` or
    `model_space` (see the module docstring); the padding (mask) is left out."""

    def __init__(self, representation: str = "last", ridge: float = 1.0, iterations: int = 40, **kwargs):
        super().__init__(**kwargs)
        self.representation, self.ridge, self.iterations = representation, ridge, iterations
        self.supports_masking = True

    def call(self, states, mask=None):
        if self.representation == "last":   # masked steps carry the state: the end is the last real one
            return states[:, -1]
        weights = ops.ones(ops.shape(states)[:2]) if mask is None else ops.cast(mask, states.dtype)
        if self.representation == "mean":
            return ops.sum(states * weights[..., None], axis=1) / ops.sum(weights, axis=1, keepdims=True)
        return model_space(states, weights, self.ridge, self.iterations)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        units = input_shape[-1]
        return (input_shape[0], (units + 1) * units if self.representation == "model_space" else units)

    def get_config(self):
        return {**super().get_config(), "representation": self.representation, "ridge": self.ridge,
                "iterations": self.iterations}


def model_space(states, weights, ridge: float, iterations: int):
    """Per series, the ridge solution [W_s; b_s] of x(t+1) ≈ x(t) W_s + b_s over the real
    transitions, flattened: A = X'X + ridge I, solved by Newton–Schulz (X_{k+1} =
    X_k (2I - A X_k), from I / ||A||_F, quadratic once converging): matrix products only."""
    current, following = states[:, :-1], states[:, 1:]
    transitions = (weights[:, :-1] * weights[:, 1:])[..., None]
    x = ops.concatenate([current, ops.ones_like(current[..., :1])], axis=-1) * transitions
    size = ops.shape(x)[-1]
    eye = ops.eye(size, dtype=states.dtype)
    gram = ops.matmul(ops.transpose(x, (0, 2, 1)), x) + ridge * eye
    cross = ops.matmul(ops.transpose(x, (0, 2, 1)), following * transitions)
    inverse = eye[None] / ops.sqrt(ops.sum(gram * gram, axis=(1, 2)))[:, None, None]
    for _ in range(iterations):
        inverse = ops.matmul(inverse, 2.0 * eye - ops.matmul(gram, inverse))
    return ops.reshape(ops.matmul(inverse, cross), (ops.shape(states)[0], -1))


class EsnParams(Hyperparameters):
    units: int = Field(default=100, ge=1)
    sr: float = Field(default=1.0, gt=0)
    lr: float = Field(default=1.0, gt=0, le=1)
    input_scaling: float = Field(default=1.0, gt=0)
    input_connectivity: float = Field(default=0.1, gt=0, le=1)
    rc_connectivity: float = Field(default=0.1, gt=0, le=1)
    bias: float = Field(default=0.0, ge=0)
    activation: Literal["tanh", "sigmoid", "relu", "linear"] = "tanh"
    seed: int = Field(default=0, ge=0)
    masking: bool = True
    representation: Literal["last", "mean", "model_space"] = "last"
    pca_components: int | None = Field(default=None, ge=1)
    model_space_ridge: float = Field(default=1.0, gt=0)
    solver_iterations: int = Field(default=40, ge=1)
    readout: Literal["ridge", "dense"] = "ridge"
    ridge: float = Field(default=1e-6, ge=0)
    warmup: int = Field(default=0, ge=0)
    regime: Literal["windows", "continuous"] = "windows"
    unroll: bool = False

    @model_validator(mode="after")
    def _continuous_reads_every_state(self):
        if self.regime == "continuous" and (self.representation != "last" or self.readout != "ridge"):
            raise ValueError("regime 'continuous' fits a ridge readout on the state at every step: "
                             "representation must be 'last' and readout 'ridge'")
        return self


def build_esn(inputs: keras.KerasTensor, head: Head, params: EsnParams) -> keras.Model:
    """Echo state network: a fixed random reservoir, a representation, a trained readout."""
    if head.per_step and params.representation != "last":
        raise ValueError("per-step outputs read every state: representation must be 'last'")
    x = layers.Masking(mask_value=0.0, name="masking")(inputs) if params.masking else inputs
    cell = ReservoirCell(params.units, sr=params.sr, lr=params.lr, input_scaling=params.input_scaling,
                         input_connectivity=params.input_connectivity, rc_connectivity=params.rc_connectivity,
                         bias=params.bias, activation=params.activation, seed=params.seed, name="cell")
    x = layers.RNN(cell, return_sequences=True, unroll=params.unroll, name="reservoir")(x)
    if params.pca_components:
        x = layers.Dense(params.pca_components, trainable=False, name="pca")(x)
    if not head.per_step:
        x = StateSummary(params.representation, ridge=params.model_space_ridge,
                         iterations=params.solver_iterations, name="representation")(x)
    return keras.Model(inputs, head.layer()(x), name="esn")


ACTIVATIONS = {"tanh": np.tanh, "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
               "relu": lambda v: np.maximum(v, 0.0), "linear": lambda v: v}


def harvest(model: keras.Model, inputs: np.ndarray, masking: bool,
            every_step: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The reservoir's states for `inputs` (N, T, features), at every step or only the
    last, computed with NumPy from the layer's own float32 weights (no graph to trace, so
    a short series fits in milliseconds), and which steps are real (not padding). A
    padded step keeps the previous state, as Keras masking does."""
    cell = model.get_layer("reservoir").cell
    w_in, w, b = (keras.ops.convert_to_numpy(v) for v in (cell.input_kernel, cell.recurrent_kernel,
                                                          cell.bias_vector))
    activation, lr = ACTIVATIONS[cell.activation_name], np.float32(cell.lr)
    inputs = inputs.astype(np.float32)
    real = np.any(inputs != 0, axis=-1) if masking else np.ones(inputs.shape[:2], bool)
    state = np.zeros((len(inputs), cell.units), np.float32)
    states = np.empty((len(inputs), inputs.shape[1], cell.units), np.float32) if every_step else None
    for t in range(inputs.shape[1]):
        update = (1 - lr) * state + lr * activation(inputs[:, t] @ w_in + b + state @ w)
        state = np.where(real[:, t, None], update, state) if masking else update
        if every_step:
            states[:, t] = state
    return (states if every_step else state), real


def fit(model: keras.Model, inputs: np.ndarray, targets: np.ndarray, params: EsnParams,
        stream: Stream | None = None) -> None:
    """Fit what has a closed form: the PCA of the training states (scikit-learn), then a
    ridge readout over the representations (a `dense` readout is left to gradient descent).
    `regime` "windows" collects the states of the training examples, each from a zero
    state; "continuous" drives the reservoir once through the training series `stream`
    (as reservoirpy does) and fits every step whose next point is a training target (the
    first is the first window's last point; the validation's are left out), from step
    `warmup` on."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge

    readout = model.get_layer("outputs")
    per_step = readout.input.ndim == 3
    if params.regime == "continuous":
        if stream is None or per_step or params.representation != "last":
            raise ValueError("regime 'continuous' drives the reservoir through one series: forecasting "
                             "datasets only, with representation 'last'")
        states, _ = harvest(model, stream.points[None], params.masking)
        fitted = stream.fitted & (np.arange(len(stream.fitted)) >= params.warmup)
        if not fitted.any():
            raise ValueError(f"warmup {params.warmup} leaves none of the {len(fitted)} training steps")
        states, real, targets = states[0][fitted][:, None], np.ones((int(fitted.sum()), 1), bool), \
            stream.targets[fitted]
    else:
        every_step = per_step or params.pca_components or params.representation != "last"
        states, real = harvest(model, inputs, params.masking, every_step)
    features = states
    if params.pca_components:
        if params.pca_components > min(states.shape[-1], int(real.sum())):
            raise ValueError(f"pca_components {params.pca_components} exceeds the {states.shape[-1]} "
                             f"reservoir units or the {int(real.sum())} training states")
        pca = PCA(params.pca_components, svd_solver="full").fit(states[real])
        layer = model.get_layer("pca")
        layer.set_weights([pca.components_.T, -pca.mean_ @ pca.components_.T])
        features = keras.ops.convert_to_numpy(layer(states.astype("float32")))
    if params.readout == "dense":
        return
    if features.ndim == 3 and not per_step:  # one target per sequence
        summary = model.get_layer("representation")
        features = keras.ops.convert_to_numpy(summary(features.astype("float32"), mask=real))
    if features.ndim == 3:  # per-step targets: every step after the warmup is a sample
        if params.warmup >= features.shape[1]:
            raise ValueError(f"warmup {params.warmup} leaves none of the {features.shape[1]} steps")
        features = features[:, params.warmup:].reshape(-1, features.shape[-1])
        targets = targets[:, params.warmup:].reshape(-1, *targets.shape[2:])
    if readout.activation is keras.activations.softmax:  # classes as one-hot targets
        targets = np.eye(readout.units)[targets.astype(int)]
    targets = targets.reshape(len(features), -1)
    ridge = Ridge(alpha=params.ridge, solver="cholesky").fit(features.astype(np.float64), targets)
    kernel = np.reshape(ridge.coef_, (targets.shape[1], features.shape[1])).T
    readout.set_weights([kernel.astype("float32"), np.reshape(ridge.intercept_, -1).astype("float32")])


# Gradient descent follows the closed-form fit only for a `dense` readout.
register("esn", hyperparameters=EsnParams, tasks=TASKS, fit=fit,
         gradient=lambda params: params.readout == "dense",
         serves=lambda params: ("forecasting",) if params.regime == "continuous" else TASKS)(build_esn)
