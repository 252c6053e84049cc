"""Datasets by name: the embedded TFDS builders of ours, or any TFDS catalog dataset.

A dataset name in `params.yaml` is either an embedded one (`digits`,
`fashion_mnist`: built offline from `data/<name>/`) or `tfds/<catalog name>`
(`tfds/fashion_mnist`, `tfds/mnist`, ...: downloaded by TFDS, online machines only).
Everything downstream sees the same thing: TFDS splits as `tf.data` datasets of
`(features, label)` pairs and the dataset's `tfds.core.DatasetInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tensorflow_datasets as tfds

from pipelines import paths
from pipelines.datasets.builders import ArchlabDigits, ArchlabFashionMnist, RawDataError

CATALOG_PREFIX = "tfds/"
EMBEDDED: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "digits": ArchlabDigits,
    "fashion_mnist": ArchlabFashionMnist,
}

__all__ = ["CATALOG_PREFIX", "EMBEDDED", "RawDataError", "Splits", "builder", "check_name",
           "load", "prepare", "static_task", "task_of"]


def check_name(name: str) -> None:
    """Raise a ValueError naming the allowed values if `name` is no dataset name."""
    if name in EMBEDDED:
        return
    if name.startswith(CATALOG_PREFIX) and len(name) > len(CATALOG_PREFIX):
        return
    raise ValueError(f"unknown dataset {name!r}; embedded: {', '.join(sorted(EMBEDDED))}, "
                     f"or a TFDS catalog name as '{CATALOG_PREFIX}<name>'")


def builder(name: str, data_dir: Path | None = None) -> tfds.core.DatasetBuilder:
    check_name(name)
    data_dir = data_dir or paths.TFDS_DIR
    if name in EMBEDDED:
        return EMBEDDED[name](data_dir=str(data_dir))
    return tfds.builder(name[len(CATALOG_PREFIX):], data_dir=str(data_dir))


def prepare(name: str, data_dir: Path | None = None, raw_dir: Path | None = None) -> None:
    """Build the TFDS dataset: from `raw_dir/<name>/` if embedded, by download if catalog."""
    b = builder(name, data_dir)
    if name not in EMBEDDED:
        b.download_and_prepare()
        return
    manual = (raw_dir or paths.DATA) / name
    if not manual.is_dir() or not any(manual.iterdir()):
        raise RawDataError(f"missing raw data for {name!r} in {manual}; run `make data`")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    canonicalise_records(Path(b.data_dir))


def canonicalise_records(folder: Path) -> None:
    """Rewrite TFRecord shards with deterministic protobuf serialisation.

    TFDS serialises each `tf.train.Example` with its feature map in hash order, which
    varies between processes: the same data gives different bytes, and DVC a different
    hash. Re-serialising with sorted map keys gives the same bytes for the same data.
    """
    for shard in sorted(folder.glob("*.tfrecord-*")):
        staging = shard.with_name(shard.name + ".tmp")
        with tf.io.TFRecordWriter(str(staging)) as writer:
            for record in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
                example = tf.train.Example.FromString(record)
                writer.write(example.SerializeToString(deterministic=True))
        staging.replace(shard)


def static_task(name: str) -> str | None:
    """The task of an embedded dataset, known without loading it (None for catalog names)."""
    return EMBEDDED[name].ARCHLAB_TASK if name in EMBEDDED else None


def task_of(info: tfds.core.DatasetInfo) -> str:
    """The archlab task a dataset's features imply."""
    features = info.features
    if "image" in features and "label" in features and \
            isinstance(features["label"], tfds.features.ClassLabel):
        return "image_classification"
    raise ValueError(f"dataset {info.name!r} has features {sorted(features.keys())}; "
                     "archlab handles image + label (image_classification)")


@dataclass
class Splits:
    """Train / validation / test as `(image, label)` datasets, plus what describes them."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    info: tfds.core.DatasetInfo

    @property
    def task(self) -> str:
        return task_of(self.info)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.info.features["image"].shape)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.features["label"].names)


def load(name: str, validation_percent: int, data_dir: Path | None = None) -> Splits:
    """Load a prepared dataset; the validation split is the tail of the training split."""
    b = builder(name, data_dir)
    if name not in EMBEDDED:
        b.download_and_prepare()
    elif not Path(b.data_dir).exists():
        raise FileNotFoundError(f"dataset {name!r} is not prepared in {b.data_dir}; "
                                "run the prepare stage (`dvc repro prepare`)")
    keep = 100 - validation_percent
    train, validation, test = b.as_dataset(
        split=[f"train[:{keep}%]", f"train[{keep}%:]", "test"],
        as_supervised=True, shuffle_files=False)
    return Splits(train, validation, test, b.info)
