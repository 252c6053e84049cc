"""Step models of a forecaster: one point in, the next point's forecast out, the state carried.

A forecaster's window model reads W points from a zero state at every call. Its step model
shares the trained layers and reads one point from a given state:

    [point (B, channels), state_0, state_1, ...] -> [forecast (B, 1), state_0', state_1', ...]

so a series that arrives one point at a time costs one recurrent step per point, not W,
and free-running generation feeds each forecast back as the next point. Built for models
whose layers are, in order: an optional `Masking`, recurrent layers (Keras's `SimpleRNN`,
`LSTM`, `GRU`, or a `keras.layers.RNN` of any cell, such as the echo state network's
reservoir), then per-step layers (`Dense`; the ESN's `StateSummary` of the last state).
Each cell's output is its first state (h for all of them), which the next layer reads.
A masked point (all features 0) keeps every state, as the window model's masking does.
A bidirectional layer reads the future, so such a model has no step model.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from models.registry import inference_graph


class CellStep(layers.Layer):
    """One step of a trained recurrent layer's cell: (input, states) -> new states (a layer
    of its own, so that the cells of several layers, all named alike, can share a model)."""

    def __init__(self, cell, **kwargs):
        super().__init__(**kwargs)
        self.cell = cell

    def call(self, inputs, states):
        _, updated = self.cell(inputs, list(states))
        return list(updated) if isinstance(updated, (list, tuple)) else [updated]


def state_sizes(cell) -> list[int]:
    size = cell.state_size
    return [int(s) for s in size] if isinstance(size, (list, tuple)) else [int(size)]


def step_model(model: keras.Model, batch_size: int | None = None) -> keras.Model:
    """The step model of a trained window model, sharing its layers; a `ValueError` names
    the layer it cannot step through."""
    body = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    recurrent = [layer for layer in body if isinstance(layer, layers.RNN)]
    if not recurrent and not any(isinstance(layer, layers.Bidirectional) for layer in body):
        raise ValueError(f"{model.name} has no recurrent layer: nothing to step")
    channels = model.input_shape[-1]
    point = keras.Input(shape=(channels,), batch_size=batch_size, name="point")
    states = [keras.Input(shape=(size,), batch_size=batch_size, name=f"state_{i}")
              for i, size in enumerate(s for layer in recurrent for s in state_sizes(layer.cell))]
    keep = None
    x, new_states, read = point, [], 0
    for layer in body:
        if isinstance(layer, layers.Masking):
            keep = ops.any(ops.not_equal(point, layer.mask_value), axis=-1, keepdims=True)
        elif isinstance(layer, layers.RNN):
            count = len(state_sizes(layer.cell))
            previous = states[read:read + count]
            updated = CellStep(layer.cell, name=f"{layer.name}_step")(x, previous)
            if keep is not None:
                updated = [ops.where(keep, new, old) for new, old in zip(updated, previous)]
            new_states += updated
            read += count
            x = updated[0]
        elif isinstance(layer, layers.Dense):
            x = layer(x)
        elif getattr(layer, "representation", None) == "last":   # the ESN's StateSummary: the state itself
            continue
        else:
            raise ValueError(f"{model.name}: layer {layer.name} ({type(layer).__name__}) cannot run one step "
                             "at a time; step models need recurrent layers read forwards, then dense layers")
    return keras.Model([point, *states], [x, *new_states], name=f"{model.name}_step")


def zero_states(step: keras.Model, batch: int = 1) -> list[np.ndarray]:
    return [np.zeros((batch, i.shape[-1]), np.float32) for i in step.inputs[1:]]


class Stepper:
    """A step model run by the backend's compiled graph, on NumPy arrays."""

    def __init__(self, step: keras.Model):
        self.step, self.graph = step, inference_graph(step)

    def __call__(self, points: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One point per series (B, channels): forecasts (B,) and the new states."""
        outputs = self.graph([keras.ops.convert_to_tensor(points, "float32"),
                              *(keras.ops.convert_to_tensor(s) for s in states)])
        forecast, *states = (keras.ops.convert_to_numpy(o) for o in outputs)
        return forecast[:, 0], states

    def read(self, points: np.ndarray, states: list[np.ndarray] | None = None,
             keep_states: np.ndarray | None = None):
        """Read `points` (B, T, channels) in order, teacher forced: the forecast after each
        (B, T), the states after the last point, and the states after each step listed in
        `keep_states` (indices into T), stacked per state (len(keep_states), B, size)."""
        states = zero_states(self.step, len(points)) if states is None else states
        wanted = set() if keep_states is None else {int(t) for t in keep_states}
        forecasts, kept = np.empty(points.shape[:2], np.float32), {}
        for t in range(points.shape[1]):
            forecasts[:, t], states = self(points[:, t], states)
            if t in wanted:
                kept[t] = states
        stacked = None if keep_states is None else \
            [np.stack([kept[int(t)][i] for t in keep_states]) if len(keep_states) else
             np.zeros((0, *s.shape), np.float32) for i, s in enumerate(states)]
        return forecasts, states, stacked

    def free_run(self, first: np.ndarray, states: list[np.ndarray], steps: int) -> np.ndarray:
        """From `states` and the forecast `first` (B,) they gave, `steps` forecasts (B, steps),
        each fed back as the next point (a one-channel series)."""
        out = np.empty((len(first), steps), np.float32)
        out[:, 0] = first
        for t in range(1, steps):
            out[:, t], states = self(out[:, t - 1, None], states)
        return out
