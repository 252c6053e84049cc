"""The export of a forecaster: its window model and its step model.

    <variant>.tflite        the window model, W points -> the next (`window.WindowModel`)
    <variant>_step.tflite   the step model (`models/streaming.py`): [point, states] ->
                            [the next point's forecast, states], for a device that reads
                            a series one point at a time with the state carried
    stream.json             what the edge runner's `forecast` needs: the window (the least
                            warm-up), channels, state sizes, the scaling (each column's
                            training mean and std), the columns' names (a user's CSV) and
                            the variants that have a step file

Parity of the step model: its file steps through the last W points of the training series
(`forecasting.training_points`) and then the whole test series, the state carried (never reset), against the Keras step
model doing the same; float32 must agree within `export.float32_tolerance`. The step model
has no recurrent loop op, but the int8 variant is the window model's alone (a full-integer
step model would requantise its carried state at every step). A bidirectional model reads
the future, so it has the window model alone.
"""

from __future__ import annotations

import keras
import numpy as np
from tqdm import tqdm

from edge.runner import Forecaster
from models.streaming import Stepper, state_sizes, step_model, zero_states
from pipelines import config
from pipelines.exporters import tflite
from pipelines.exporters.window import WindowModel
from pipelines.runtime import StageError
from pipelines.tasks.forecasting import nrmse, training_points


class Streaming(WindowModel):
    def __init__(self, model: keras.Model, exp: config.Experiment, task, splits, variants):
        super().__init__(model, exp, task, splits, variants)
        try:
            self.step = step_model(model, batch_size=1)
        except ValueError:
            self.step = None
        self.width, self.splits = model.input_shape[1], splits
        self.variants = [v for v in variants if v != "int8"] if self.step is not None else []
        self._series = self._keras = None

    def write(self, variant: str, folder, representative) -> list:
        """The window model's file (what `run` checks); the step model's beside it."""
        if self.step is not None and variant != "int8":
            step_file(folder, variant).write_bytes(tflite.convert(self.step, variant))
        return super().write(variant, folder, representative)

    def spec(self) -> dict | None:
        """stream.json (None without a step model)."""
        if self.step is None:
            return None
        recurrent = [layer for layer in self.step.layers if hasattr(layer, "cell")]
        columns = (self.splits.info.metadata or {}).get("columns")   # a user's CSV names them
        return {"window": self.width, "channels": int(self.step.inputs[0].shape[-1]),
                "states": [s for layer in recurrent for s in state_sizes(layer.cell)],
                **(self.splits.scaling or {}), **({"columns": columns} if columns else {}), "variants": self.variants}

    def parity_series(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The points a step file reads for its parity (the last W of the training series,
        then the test series), the Keras step model's forecasts after each, and where the
        test targets' forecasts start."""
        if self._series is None:
            train = training_points(self.splits)
            test, _, _ = self.splits.stream("test")
            self._series = np.concatenate([train[-self.width:], test]).astype(np.float32)
            self._keras = Stepper(self.step).read(self._series[None])[0][0]
        return self._series, self._keras, 2 * self.width - 1

    def extras(self, folder, variant: str, settings: config.Export, desc: str) -> tuple[dict, dict]:
        """The step file's metrics and latency (nothing without one)."""
        path = step_file(folder, variant)
        if not path.exists():
            return {}, {}
        points, expected, scored = self.parity_series()
        model = Forecaster(path, self.spec())
        tflite.check_builtin(model.model, path)
        forecasts = np.array([model.step(p) for p in tqdm(points, desc=f"{desc} step", unit="pt", leave=False)])
        diff = float(np.max(np.abs(forecasts - expected)))
        if variant == "float32" and not diff <= settings.float32_tolerance:
            raise StageError(f"{path.name} differs from the Keras step model by {diff:.3g} over the test series "
                             f"(the state carried) > export.float32_tolerance {settings.float32_tolerance:g}")
        _, following, _ = self.splits.stream("test")
        truth = following[self.width - 1:]
        prefix = f"tflite_{variant}_step"
        model.states = model.zero_states()
        timings = {f"{prefix}_latency_ms": tflite.median_latency_ms(model.step, points[0], settings.latency_runs)}
        return {f"{prefix}_size_bytes": path.stat().st_size, f"{prefix}_max_abs_diff": diff,
                f"{prefix}_nrmse_delta": nrmse(forecasts[scored:], truth) - nrmse(expected[scored:], truth)}, timings

    def keras_step_latency_ms(self, runs: int) -> float:
        stepper = Stepper(self.step)
        states = zero_states(self.step)
        point = np.zeros((1, self.step.inputs[0].shape[-1]), np.float32)
        return tflite.median_latency_ms(lambda _: stepper(point, states), None, runs)

    @staticmethod
    def one_point(folder, variant: str):
        """What the per-point latency times: one step of the step file, the state carried
        (None without one)."""
        if not step_file(folder, variant).exists():
            return None
        model = Forecaster.from_folder(folder, variant)
        point = np.zeros(model.spec["channels"], np.float32)
        return lambda: model.step(point)


def step_file(folder, variant: str):
    return folder / f"{variant}_step.tflite"
