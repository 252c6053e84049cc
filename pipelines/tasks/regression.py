"""Regression to one real value, shared by forecasting and sequence regression: a linear
output, mean squared error, the predicted value beside the actual one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.registry import Head
from pipelines.tasks.base import Task


def mse(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((outputs.reshape(targets.shape) - targets) ** 2))


class Regression(Task):
    loss = "mse"
    metrics = ("mae",)
    higher_is_better = False

    def head(self, splits) -> Head:
        return Head(1, activation="linear")

    def table(self, outputs, targets, names, inputs=None) -> pd.DataFrame:
        return pd.DataFrame({"actual": targets, "predicted": outputs.reshape(targets.shape)})
