"""Datasets by name: the embedded TFDS builders of ours, or any TFDS catalog dataset.

A dataset name in `params.yaml` is one of

- an embedded dataset built offline from `data/<name>/` (`make data` fetches it):
  `digits`, `fashion_mnist`, `japanese_vowels`, `santafe_laser`;
- `fortunes` (Debian's fortune cookies, for character language models);
- a generated one: `mackey_glass`, `addition` (integer addition as text), with its
  sequence length T as the config: `adding_problem/t100`, `copy_task/t50` (any T >= 2), or
  `listops` (nested list operations as trees; `listops/d<D>` for depths up to D, default d5);
- a user's dataset, named in `params.yaml`'s `user_datasets` with its path: a folder of
  images, a CSV time series or a text (`user.py`; `use_user_datasets` registers them);
- `tfds/<catalog name>` (`tfds/fashion_mnist`, `tfds/mnist`, ...: downloaded by TFDS,
  online machines only): image classification sets, and text corpora for language models
  (`tfds/tiny_shakespeare`, cut into character windows like the fortunes).

Everything downstream sees the same thing: TFDS splits as `tf.data` datasets of
`(input, target)` pairs (the dataset's supervised keys), its `tfds.core.DatasetInfo`
and its archlab task.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from pipelines import paths


class RawDataError(ValueError):
    """A raw data file is missing or not what it claims to be."""

CATALOG_PREFIX = "tfds/"
# Each embedded dataset's builder: (module of pipelines/datasets, class). A dataset's
# module is imported when the dataset is used, so a stage reads (and DVC tracks) only its own.
EMBEDDED: dict[str, tuple[str, str]] = {
    "digits": ("builders", "ArchlabDigits"),
    "fashion_mnist": ("builders", "ArchlabFashionMnist"),
    "japanese_vowels": ("sequences", "ArchlabJapaneseVowels"),
    "santafe_laser": ("sequences", "ArchlabSantaFeLaser"),
    "mackey_glass": ("sequences", "ArchlabMackeyGlass"),
    "adding_problem": ("sequences", "ArchlabAddingProblem"),
    "copy_task": ("sequences", "ArchlabCopyTask"),
    "addition": ("text", "ArchlabAddition"),
    "fortunes": ("text", "ArchlabFortunes"),
    "listops": ("listops", "ArchlabListops"),
}
GENERATED = {"adding_problem", "copy_task", "mackey_glass", "addition", "listops"}   # no raw data
# Tasks a dataset serves besides its own (an experiment's `task`): its images, reconstructed
ALSO = {"image_classification": ("reconstruction",)}
# The user's datasets (`params.yaml`: user_datasets), by name: their entries, with `kind` and
# `path`; set by `use_user_datasets` when params.yaml is read. Each kind's builder is in
# `user.py`, and its task is known without importing it.
USER: dict[str, dict] = {}
USER_MODULE = "user"
USER_TASKS = {"images": "image_classification", "csv": "forecasting", "text": "language_modelling"}
WITH_LENGTH = {"adding_problem", "copy_task"}   # T is the config: adding_problem/t100
# Datasets that take a config after their name (the builder's `named_config`), and how the
# error message spells it; WITH_LENGTH's is required, the others' optional
CONFIGURED = {"adding_problem": "/t<T>", "copy_task": "/t<T>", "listops": "[/d<D>]"}

__all__ = ["ALSO", "CATALOG_PREFIX", "CONFIGURED", "EMBEDDED", "GENERATED", "USER", "USER_TASKS", "RawDataError",
           "Splits", "builder", "builder_class", "check_name", "load", "module_of", "prepare", "static_task", "task",
           "task_of", "use_user_datasets", "user_path"]


def use_user_datasets(entries: dict[str, dict]) -> None:
    """Register the user's datasets of params.yaml (replacing any registered before)."""
    USER.clear()
    USER.update(entries)


def user_path(name: str) -> Path:
    """Where user dataset `name`'s files are: its `path`, relative to the repository or absolute."""
    path = Path(USER[name]["path"])
    return path if path.is_absolute() else paths.ROOT / path


def builder_class(base: str) -> type[tfds.core.GeneratorBasedBuilder]:
    """The TFDS builder class of an embedded dataset (its module imported on first use)."""
    module, name = EMBEDDED[base]
    return getattr(importlib.import_module(f"pipelines.datasets.{module}"), name)


def module_of(name: str) -> str | None:
    """The module that builds dataset `name` (None for a catalog dataset)."""
    if name in USER:
        return f"pipelines.datasets.{USER_MODULE}"
    embedded = _embedded(name)
    return f"pipelines.datasets.{EMBEDDED[embedded[0]][0]}" if embedded else None


def _embedded(name: str) -> tuple[str, str | None] | None:
    """(builder name, config) of an embedded or generated dataset name, else None."""
    base, _, config = name.partition("/")
    if base not in EMBEDDED or name.startswith(CATALOG_PREFIX):
        return None
    if base in WITH_LENGTH and not config:
        raise ValueError(f"dataset {name!r} needs its sequence length: {base}/t<T>, e.g. {base}/t100")
    if not config:
        return base, None
    if base not in CONFIGURED:
        return None
    try:
        builder_class(base).named_config(config)
    except ValueError as e:
        raise ValueError(f"dataset {name!r}: {e}") from None
    return base, config


def check_name(name: str) -> None:
    """Raise a ValueError naming the allowed values if `name` is no dataset name."""
    if name in USER or _embedded(name) is not None:
        return
    if name.startswith(CATALOG_PREFIX) and len(name) > len(CATALOG_PREFIX):
        return
    embedded = sorted(n + CONFIGURED.get(n, "") for n in EMBEDDED)
    user = f"user_datasets: {', '.join(USER)}, " if USER else ""
    raise ValueError(f"unknown dataset {name!r}; embedded: {', '.join(embedded)}, {user}"
                     f"or a TFDS catalog name as '{CATALOG_PREFIX}<name>'")


def builder(name: str, data_dir: Path | None = None) -> tfds.core.DatasetBuilder:
    check_name(name)
    data_dir = str(data_dir or paths.tfds_dir(name))
    if name in USER:
        return _user_builder(name, data_dir)
    embedded = _embedded(name)
    if embedded is None:
        return tfds.builder(name[len(CATALOG_PREFIX):], data_dir=data_dir)
    base, config = embedded
    cls = builder_class(base)
    if config is None:
        return cls(data_dir=data_dir)
    listed = {c.name: c for c in cls.BUILDER_CONFIGS}
    return cls(config=listed.get(config) or cls.named_config(config), data_dir=data_dir)


def _user_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """A user dataset's builder: read back from its prepared files (so that the stages after
    `prepare_user@<name>` never read the user's files), or from its settings to prepare it."""
    from pipelines.datasets.user import BUILDERS, user_config

    cls = BUILDERS[USER[name]["kind"]]
    prepared = Path(data_dir) / cls.name / name / str(cls.VERSION)
    if (prepared / "dataset_info.json").exists():
        return tfds.builder_from_directory(str(prepared))
    return cls(config=user_config(name, {**USER[name], "path": str(user_path(name))}), data_dir=data_dir)


def prepare(name: str, data_dir: Path | None = None, raw_dir: Path | None = None) -> None:
    """Build the TFDS dataset: from `raw_dir/<name>/` if embedded, generated from its
    seed, or by download if catalog."""
    b = builder(name, data_dir)
    embedded = _embedded(name)
    if embedded is None and name not in USER:
        b.download_and_prepare()
        return
    if name in USER or embedded[0] in GENERATED:
        b.download_and_prepare()
    else:
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
    """The task of an embedded or user dataset, known without loading it (None for catalog names)."""
    if name in USER:
        return USER_TASKS[USER[name]["kind"]]
    embedded = _embedded(name)
    return builder_class(embedded[0]).ARCHLAB_TASK if embedded else None


def task_of(info: tfds.core.DatasetInfo) -> str:
    """The archlab task of a catalog dataset, from its features."""
    features = info.features
    if "image" in features and "label" in features and \
            isinstance(features["label"], tfds.features.ClassLabel):
        return "image_classification"
    if list(features.keys()) == ["text"] and isinstance(features["text"], tfds.features.Text):
        return "language_modelling"
    raise ValueError(f"dataset {info.name!r} has features {sorted(features.keys())}; "
                     "archlab handles catalog datasets of image + label (image_classification) "
                     "and of text alone (language_modelling, e.g. tfds/tiny_shakespeare)")


def task(name: str) -> str:
    """The archlab task of any dataset name (catalog ones are looked up in TFDS)."""
    return static_task(name) or task_of(builder(name).info)


@dataclass
class Splits:
    """Train / validation / test as `(input, target)` datasets, plus what describes them."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    info: tfds.core.DatasetInfo
    task: str
    builder: tfds.core.DatasetBuilder | None = None
    tokens: list[str] | None = None   # a token dataset's vocabulary, if not the builder's
    train_split: str = "train"        # the builder's split that `train` reads (the rest is validation)

    def _examples(self, split: str) -> list[dict]:
        if self.builder is None or "position" not in self.info.features:
            raise ValueError(f"dataset {self.info.name!r} has no series positions")
        return sorted(self.builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator(),
                      key=lambda e: e["position"])

    def series(self, split: str) -> np.ndarray:
        """A whole forecasting split ('train' or 'test') as the contiguous series its
        windows were cut from: the first window, then every target in order."""
        examples = self._examples(split)
        return np.concatenate([examples[0]["window"][:, 0], [e["target"] for e in examples]])

    def stream(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A whole forecasting split read as one stream: the points its windows read, in
        order (T, channels), the next value of the forecast column after each (T,), and that
        value's position in the series (T,)."""
        examples = self._examples(split)
        first = examples[0]["window"]
        points = np.concatenate([first, [e["window"][-1] for e in examples[1:]]])
        targets = np.concatenate([points[1:, 0], [examples[-1]["target"]]])
        return points, targets, examples[0]["position"] - len(first) + 1 + np.arange(len(points))

    def positions(self, limit: int | None = None) -> np.ndarray:
        """The series positions of the training targets (the first `limit` examples of
        `train`), which the validation's are not."""
        ds = self.builder.as_dataset(split=self.train_split, shuffle_files=False).map(lambda e: e["position"])
        return np.fromiter((ds.take(limit) if limit else ds).as_numpy_iterator(), np.int64)

    @property
    def scaling(self) -> dict | None:
        """A forecasting series' scaling: the training series' mean and standard deviation per
        column, which its builder standardised every column with (None if not recorded)."""
        metadata = self.info.metadata or {}
        return {"mean": metadata["mean"], "std": metadata["std"]} if "mean" in metadata else None

    @property
    def input_shape(self) -> tuple:
        if self.info.supervised_keys is None:   # windows cut from a catalog text
            return tuple(self.train.element_spec[0].shape)
        return tuple(self.info.features[self.info.supervised_keys[0]].shape)

    @property
    def class_names(self) -> list[str] | None:
        """The target's class names (per step for sequence targets); None for real targets."""
        if self.info.supervised_keys is None:
            return None
        target = self.info.features[self.info.supervised_keys[1]]
        if isinstance(target, tfds.features.Sequence):
            target = target.feature
        return list(target.names) if isinstance(target, tfds.features.ClassLabel) else None

    @property
    def vocabulary(self) -> list[str] | None:
        """The tokens by id of a token dataset (addition, fortunes); None otherwise."""
        return self.tokens or list(getattr(self.builder, "VOCABULARY", None) or []) or None


def load(name: str, validation_percent: int, data_dir: Path | None = None) -> Splits:
    """Load a prepared dataset; the validation split is the tail of the training split."""
    b = builder(name, data_dir)
    own = name in USER or _embedded(name) is not None
    if not own:
        b.download_and_prepare()
    elif not Path(b.data_dir).exists():
        raise FileNotFoundError(f"dataset {name!r} is not prepared in {b.data_dir}; "
                                "run its stage (`dvc repro prepare@<name>`, `generate@` or `prepare_user@`)")
    if not own and task_of(b.info) == "language_modelling":
        return _catalog_text(b, validation_percent)
    keep = 100 - validation_percent
    train, validation, test = b.as_dataset(
        split=[f"train[:{keep}%]", f"train[{keep}%:]", "test"],
        as_supervised=True, shuffle_files=False)
    tokens = None
    if name in USER and USER[name]["kind"] == "text":
        from pipelines.datasets.shared import CHARACTERS  # a builder read back from its files has no VOCABULARY

        tokens = CHARACTERS
    return Splits(train, validation, test, b.info, static_task(name) or task_of(b.info), b, tokens,
                  f"train[:{keep}%]")


def _catalog_text(b: tfds.core.DatasetBuilder, validation_percent: int) -> Splits:
    """A catalog text corpus (`tfds/tiny_shakespeare`: each split one text) as the fortunes
    are: character windows of `ArchlabFortunes.WINDOW` -> the next characters, in text
    order; validation is the tail of the training text."""
    from pipelines.datasets.shared import CHARACTERS, character_windows
    from pipelines.datasets.text import ArchlabFortunes

    def windows(split: str):
        texts = [e["text"].decode("utf-8") for e in b.as_dataset(split=split, shuffle_files=False).as_numpy_iterator()]
        return character_windows("\n".join(texts), ArchlabFortunes.WINDOW)

    (train_x, train_y), test = windows("train"), windows("test")
    keep = round(len(train_x) * (100 - validation_percent) / 100)
    return Splits(tf.data.Dataset.from_tensor_slices((train_x[:keep], train_y[:keep])),
                  tf.data.Dataset.from_tensor_slices((train_x[keep:], train_y[keep:])),
                  tf.data.Dataset.from_tensor_slices(test), b.info, "language_modelling", b, CHARACTERS)
