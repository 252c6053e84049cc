"""TFDS dataset builders for the embedded datasets: data that ships inside packages.

Each builder reads its raw files from a manual directory (`data/<name>/`, fetched by
`make data` and versioned by `data.dvc`) and writes a regular TFDS dataset, so the
embedded data reaches the models exactly as a catalog dataset would.

- `ArchlabDigits`: scikit-learn's 1,797 8x8 digit images (tests, quick runs).
- `ArchlabFashionMnist`: the original Fashion-MNIST IDX files from Debian's
  `dataset-fashion-mnist`, with the same features and splits as the catalog's
  `fashion_mnist` (60,000 / 10,000, 28x28x1 uint8, 10 labels).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pipelines.datasets import RawDataError

FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DIGITS_FILE = "digits.csv.gz"
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format): magic, dims, then uint8 data."""
    if not path.exists():
        raise RawDataError(f"missing raw data file {path}; run `make data`")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise RawDataError(f"corrupt raw data file {path}: {e}") from None
    if len(raw) < 4 + 4 * expected_ndim:
        raise RawDataError(f"corrupt raw data file {path}: truncated header")
    magic = int.from_bytes(raw[:4], "big")
    dtype_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or dtype_code != 0x08 or ndim != expected_ndim:
        raise RawDataError(f"corrupt raw data file {path}: bad IDX magic {magic:#010x}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise RawDataError(f"corrupt raw data file {path}: {len(raw) - offset} bytes "
                           f"of data for shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


class ArchlabFashionMnist(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST from the original IDX files (Debian's dataset-fashion-mnist)."""

    ARCHLAB_TASK = "image_classification"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from the IDX files of Debian's dataset-fashion-mnist."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `make data`: it extracts the IDX files into data/fashion_mnist/."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Zalando's article images: 60,000 train and 10,000 test 28x28 "
                        "grayscale images in 10 classes.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(names=FASHION_MNIST_LABELS),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        return {split: self._generate_examples(root / images, root / labels)
                for split, (images, labels) in FASHION_MNIST_FILES.items()}

    def _generate_examples(self, images_path: Path, labels_path: Path):
        images = read_idx(images_path, expected_ndim=3)
        labels = read_idx(labels_path, expected_ndim=1)
        if len(images) != len(labels):
            raise RawDataError(f"{images_path.name} has {len(images)} images but "
                               f"{labels_path.name} has {len(labels)} labels")
        if labels.max(initial=0) >= len(FASHION_MNIST_LABELS):
            raise RawDataError(f"corrupt raw data file {labels_path}: label {labels.max()} >= 10")
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image[..., None], "label": int(label)}


def read_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits.csv.gz: 64 pixel values in 0..16, then the label."""
    if not path.exists():
        raise RawDataError(f"missing raw data file {path}; run `make data`")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError) as e:
        raise RawDataError(f"corrupt raw data file {path}: {e}") from None
    if table.ndim != 2 or table.shape[1] != 65 or table[:, :64].max() > 16:
        raise RawDataError(f"corrupt raw data file {path}: expected rows of 64 pixels "
                           f"in 0..16 and a label, got shape {table.shape}")
    images = np.round(table[:, :64] * (255 / 16)).astype(np.uint8).reshape(-1, 8, 8, 1)
    return images, table[:, 64]


class ArchlabDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits, a seeded 80/20 train/test split."""

    ARCHLAB_TASK = "image_classification"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "scikit-learn's digits.csv.gz, pixels scaled from 0..16 to 0..255."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `make data`: it copies scikit-learn's digits.csv.gz into data/digits/."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="1,797 8x8 images of handwritten digits (UCI, via scikit-learn).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        images, labels = read_digits(Path(dl_manager.manual_dir) / DIGITS_FILE)
        order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
        n_test = int(round(len(labels) * DIGITS_TEST_FRACTION))
        test, train = order[:n_test], np.sort(order[n_test:])
        return {"train": self._generate_examples(images[train], labels[train]),
                "test": self._generate_examples(images[np.sort(test)], labels[np.sort(test)])}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}
