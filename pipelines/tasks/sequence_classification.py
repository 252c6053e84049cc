"""Sequence classification: a padded sequence (zeros after its end) -> class; `test_accuracy`."""

from __future__ import annotations

from pipelines.tasks.classification import Classification


class SequenceClassification(Classification):
    name = "sequence_classification"


TASK = SequenceClassification()
