"""Reconstruction (autoencoders): an image -> the same image, both scaled to [0, 1].

    test_reconstruction_mse         mean over the test images of each one's pixel MSE
    test_noisy_reconstruction_mse   the clean images reconstructed from corrupted ones (the
                                    same noise for every model, so the denoising one compares)
    code_classifier_accuracy        a standardised logistic regression on the encoder's codes,
    pixel_classifier_accuracy       and the same classifier on the raw pixels

The encoder's first output is the code (a VAE's mean). Pictures: reconstructions, the
denoising grid, the latent map (PCA of the codes, by class). Evaluation settings: `noise`,
`noise_level`, `noise_seed` (gaussian, 0.3, 0) and `feature_examples` (10,000 training
images for the classifiers). Exported as its encoder and decoder (`exporters.halves`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from pydantic import Field

from models.autoencoder import corrupt
from models.registry import Head
from pipelines.plots import image_rows, plt, save
from pipelines.tasks import base


class ReconstructionEvaluation(base.Evaluation):
    noise: Literal["gaussian", "masking", "salt_and_pepper"] = "gaussian"
    noise_level: float = Field(default=0.3, gt=0, le=1)
    noise_seed: int = Field(default=0, ge=0)
    feature_examples: int = Field(default=10_000, ge=10)


def per_image_mse(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each image's reconstruction error: the mean squared error over its pixels."""
    return np.mean((outputs.reshape(len(targets), -1) - targets.reshape(len(targets), -1)) ** 2, axis=1)


def _scaled(image, label):
    return tf.cast(image, tf.float32) / 255.0, label


def plot_latent_map(codes: np.ndarray, labels: np.ndarray, class_names: list[str] | None, path: Path) -> None:
    """Test images' codes in 2-D (the first two principal components when the code is
    wider), one colour per class."""
    from sklearn.decomposition import PCA

    flat = codes.reshape(len(codes), -1)
    points = flat[:, :2] if flat.shape[1] <= 2 else PCA(2, random_state=0).fit_transform(flat)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for c in np.unique(labels):
        chosen = labels == c
        name = class_names[c] if class_names else str(c)
        ax.scatter(points[chosen, 0], points[chosen, 1] if points.shape[1] > 1 else np.zeros(chosen.sum()),
                   s=3, alpha=0.6, label=name)
    ax.set_xlabel("code 1" if flat.shape[1] <= 2 else "principal component 1")
    ax.set_ylabel("code 2" if flat.shape[1] <= 2 else "principal component 2")
    ax.legend(markerscale=4, fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    save(fig, path)


class Reconstruction(base.Task):
    name = "reconstruction"
    loss = "mse"
    headline = "reconstruction_mse"
    higher_is_better = False
    Evaluation = ReconstructionEvaluation
    no_int8 = "an encoder and a decoder, which have no int8 variant"

    def preprocess(self, image, label):
        """An image as the model's input and its target alike, scaled to [0, 1]."""
        x = tf.cast(image, tf.float32) / 255.0
        return x, x

    def head(self, splits) -> Head:
        return Head(math.prod(splits.input_shape), activation="sigmoid")

    def labelled(self, ds: tf.data.Dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A split's images, scaled as the model reads them, and their class labels."""
        return base.arrays(ds.map(_scaled, num_parallel_calls=tf.data.AUTOTUNE), limit)

    def errors(self, model: keras.Model, images: np.ndarray) -> np.ndarray:
        """Each image's reconstruction error by `model` (what one-class detection scores)."""
        return per_image_mse(self.predict(model, images), images)

    def score(self, outputs, targets) -> float:
        return float(np.mean(per_image_mse(outputs, targets)))

    def table(self, outputs, targets, names, inputs=None) -> pd.DataFrame:
        return pd.DataFrame({"reconstruction_mse": per_image_mse(outputs, targets)})

    def plot(self, outputs, targets, names, out_dir: Path, inputs=None) -> list[Path]:
        path = out_dir / "reconstructions.png"
        image_rows({"input": targets[:10], "reconstruction": outputs[:10]}, path)
        return [path]

    def extra(self, model, splits, inputs, targets, out_dir: Path,
              settings: ReconstructionEvaluation) -> tuple[dict[str, float], list[Path]]:
        """Every autoencoder on the same corrupted test images (scored against the clean
        ones), the grid input / noisy / output; the latent map; the classifiers."""
        noisy = np.asarray(corrupt(tf.constant(inputs), settings.noise, settings.noise_level, settings.noise_seed))
        outputs = self.predict(model, noisy)
        denoising = out_dir / "denoising.png"
        image_rows({"input": inputs[:10], f"{settings.noise} noise {settings.noise_level}": noisy[:10],
                    "reconstruction": outputs[:10]}, denoising)
        metrics = {"test_noisy_reconstruction_mse": self.score(outputs, inputs)}
        encoder = model.get_layer("encoder")
        codes = encode(encoder, inputs)
        _, labels = self.labelled(splits.test)
        latent = out_dir / "latent_map.png"
        plot_latent_map(codes, labels, splits.class_names, latent)
        metrics.update(self.features_for_a_classifier(encoder, splits, codes, inputs, labels,
                                                      settings.feature_examples))
        return metrics, [denoising, latent]

    def features_for_a_classifier(self, encoder, splits, test_codes, test_images, test_labels,
                                  examples: int) -> dict[str, float]:
        """The same classifier (standardised logistic regression) on the encoder's codes and
        on the raw pixels, trained on the first `examples` training images: the test
        accuracy of each."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        images, labels = self.labelled(splits.train, limit=examples)
        codes = encode(encoder, images)
        scores = {}
        for name, train_x, test_x in (("code", codes, test_codes), ("pixel", images, test_images)):
            classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
            classifier.fit(train_x.reshape(len(train_x), -1), labels)
            scores[f"{name}_classifier_accuracy"] = float(classifier.score(test_x.reshape(len(test_x), -1),
                                                                           test_labels))
        return scores

    def exporter(self) -> type:
        from pipelines.exporters.halves import Halves

        return Halves


def encode(encoder: keras.Model, images: np.ndarray) -> np.ndarray:
    """The codes of `images`: the encoder's first output (a VAE's mean)."""
    code = keras.Model(encoder.inputs, encoder.outputs[0], name="code")
    return code.predict(images, batch_size=base.PREDICT_BATCH, verbose=0)


TASK = Reconstruction()
