"""Tasks: what a dataset asks of a model, one module per task (`pipelines/tasks/<name>.py`).

    image_classification     images -> class              test_accuracy
    sequence_classification  padded sequences -> class    test_accuracy
    forecasting              window -> next value         test_nrmse, baseline_nrmse (persistence),
                                                          free_run_nrmse_<horizon> (outputs fed back)
    sequence_regression      sequence -> real value       test_mse, baseline_mse (best constant)
    sequence_tagging         sequence -> class per step   test_symbol_accuracy (non-blank steps)
    sequence_to_sequence     tokens -> tokens (seq2seq)   test_exact_match (greedy decoding),
                                                          test_char_accuracy
    language_modelling       text -> next character       test_bpc, baseline_bpc (unigram)
    reconstruction           image -> the same image      test_reconstruction_mse,
                             (autoencoders)               test_noisy_reconstruction_mse
    tree_classification      a tree (node arrays), or its test_accuracy, deep_accuracy (deeper
                             token string -> class        trees), depth_<d>_accuracy, baseline_accuracy

`get(name)` imports that task's module alone and returns its `Task` (see `base.py`).
"""

from __future__ import annotations

import importlib

import models
from pipelines.tasks.base import Task

NAMES = ("image_classification", "sequence_classification", "forecasting", "sequence_regression",
         "sequence_tagging", "sequence_to_sequence", "language_modelling", "reconstruction",
         "tree_classification")

__all__ = ["NAMES", "Task", "get"]


def get(name: str, architecture: str | None = None) -> Task:
    """The task `name` (its module imported on first use), as it serves `architecture` if
    given (`Task.serving`: a tree task gives tree models the trees, the others the tokens)."""
    if name not in NAMES:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(NAMES))}")
    task = importlib.import_module(f"pipelines.tasks.{name}").TASK
    return task if architecture is None else task.serving(models.get(architecture))
