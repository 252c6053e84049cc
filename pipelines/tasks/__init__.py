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

`get(name)` imports that task's module alone and returns its `Task` (see `base.py`).
"""

from __future__ import annotations

import importlib

from pipelines.tasks.base import Task

NAMES = ("image_classification", "sequence_classification", "forecasting", "sequence_regression",
         "sequence_tagging", "sequence_to_sequence", "language_modelling", "reconstruction")

__all__ = ["NAMES", "Task", "get"]


def get(name: str) -> Task:
    """The task `name` (its module imported on first use)."""
    if name not in NAMES:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(NAMES))}")
    return importlib.import_module(f"pipelines.tasks.{name}").TASK
