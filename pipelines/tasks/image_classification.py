"""Image classification: images (uint8 pixels scaled to [0, 1]) -> class; `test_accuracy`."""

from __future__ import annotations

import tensorflow as tf

from pipelines.tasks.classification import Classification


class ImageClassification(Classification):
    name = "image_classification"

    def preprocess(self, image, label):
        return tf.cast(image, tf.float32) / 255.0, label


TASK = ImageClassification()
