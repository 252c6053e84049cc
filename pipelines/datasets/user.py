"""Your own data as TFDS datasets: a folder of images, a CSV time series, a text file (or a
folder of them), each named in `params.yaml`'s `user_datasets` with its path and settings
(`config.UserImages`, `UserSeries`, `UserText`; README, "Your own data").

- `ArchlabUserImages` (image classification, and reconstruction for autoencoders): one
  sub-folder per class, or `train/` and `test/` folders of such sub-folders. Without them,
  each class is split in `test_percent` test / the rest train, drawn with `seed`. Images are
  read with Pillow (PNG, JPEG, BMP, GIF, TIFF, WebP: what it reads), converted to `channels`
  (1 grey, 3 RGB) and, with `image_size` set, resized to it (bilinear); without it, every
  image must have the first image's size. Hidden files (`.name`) are skipped; any other file
  in a class folder must be an image.
- `ArchlabUserSeries` (forecasting, with the persistence baseline): a CSV file with a header
  row; the `column` to forecast, and `inputs` (other columns) fed beside it: windows of
  `window` rows -> the column's next value. The last `test_percent` of the rows, in order,
  are the test part; every column is standardised with the training part's mean and
  standard deviation only.
- `ArchlabUserText` (character language modelling): a text file, or a folder of them (the
  `.txt` files in it and below, by name), joined by newlines; the last `test_percent` of the
  characters are held out. Cut into windows of `window` characters as the fortunes are
  (`shared.CharacterWindows`: printable ASCII, newline and tab; any other character is
  "unknown").

Everything is read and checked before anything is written: a bad file stops the build with
one line naming the file (and the row or image) and the cause (`RawDataError`).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from pipelines import paths
from pipelines.datasets import RawDataError
from pipelines.datasets.shared import CharacterWindows, ForecastingWindows

SPLIT_FOLDERS = ("train", "test")
MIN_IMAGES = 2          # per class: one to train on and one to test on
TEXT_SUFFIX = ".txt"


@dataclasses.dataclass
class UserConfig(tfds.core.BuilderConfig):
    """A user dataset's settings (`params.yaml`), its name the dataset's name."""

    path: str = ""
    settings: tuple = ()   # the kind's settings as (key, value) pairs

    def get(self, key: str):
        return dict(self.settings)[key]


def user_config(name: str, spec: dict) -> UserConfig:
    """The builder config of dataset `name` from its `params.yaml` entry (path resolved)."""
    settings = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in spec.items()
                            if k not in ("kind", "path")))
    return UserConfig(name=name, path=str(spec["path"]), settings=settings,
                      description=f"user dataset {name!r} from {spec['path']}")


def _existing(path: Path) -> Path:
    """`path`, which must exist and lie outside `data/` (the embedded raw data, which `make
    data` commits to data.dvc whole: a user's files there would be versioned twice, and every
    edit would change data.dvc)."""
    if path.resolve().is_relative_to(paths.DATA.resolve()):
        raise RawDataError(f"{path}: inside {paths.DATA}, which data.dvc versions (the embedded raw data); "
                           "keep your files elsewhere, e.g. user_data/")
    if not path.exists():
        raise RawDataError(f"{path}: no such file or folder")
    return path


# --- a folder of images ----------------------------------------------------------------------

def _class_folders(root: Path) -> dict[str, list[Path]]:
    """Each class folder's image files (hidden files skipped), by class name."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise RawDataError(f"{root}: no class folders (expected one sub-folder of images per class)")
    return {f.name: sorted(p for p in f.iterdir() if p.is_file() and not p.name.startswith("."))
            for f in folders}


def read_image(path: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """One image as (height, width, channels) uint8, resized to `size` (height, width) if set."""
    try:
        with Image.open(path) as image:
            image.load()   # decodes it all: a truncated file fails here
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, np.uint8)
    except UnidentifiedImageError:
        raise RawDataError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise RawDataError(f"{path}: unreadable image ({e})") from None
    return pixels.reshape(*pixels.shape[:2], channels)


class ArchlabUserImages(tfds.core.GeneratorBasedBuilder):
    """A folder of images, one sub-folder per class (or train/ and test/ folders of them)."""

    ARCHLAB_TASK = "image_classification"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "A user's folder of images."}

    @property
    def _root(self) -> Path:
        return _existing(Path(self.builder_config.path))

    @functools.cached_property
    def _files(self) -> dict[str, dict[str, list[Path]]]:
        """Each split's image files by class, checked: classes with enough images."""
        root = self._root
        if not root.is_dir():
            raise RawDataError(f"{root}: not a folder (expected one sub-folder of images per class)")
        layout = {p.name for p in root.iterdir() if p.is_dir()}
        if set(SPLIT_FOLDERS) <= layout:
            train, test = (_class_folders(root / s) for s in SPLIT_FOLDERS)
            unknown = sorted(set(test) - set(train))
            if unknown:
                raise RawDataError(f"{root / 'test' / unknown[0]}: a class with no folder in {root / 'train'}")
            counts = {c: len(train[c]) + len(test.get(c, [])) for c in train}
            split = {"train": train, "test": test}
        else:
            split = self._seeded_split(_class_folders(root))
            counts = {c: len(split["train"][c]) + len(split["test"][c]) for c in split["train"]}
        for c, n in counts.items():
            if n < MIN_IMAGES:
                folder = root / ("train" if "train" in layout else "") / c
                raise RawDataError(f"{folder}: {n} image{'s' * (n != 1)}; a class needs at least {MIN_IMAGES} "
                                   "(one to train on, one to test on)")
        return split

    def _seeded_split(self, classes: dict[str, list[Path]]) -> dict[str, dict[str, list[Path]]]:
        rng = np.random.default_rng(self.builder_config.get("seed"))
        split = {"train": {}, "test": {}}
        for c, files in classes.items():
            order = rng.permutation(len(files))
            n_test = min(max(1, round(len(files) * self.builder_config.get("test_percent") / 100)), len(files) - 1)
            split["test"][c] = sorted(files[i] for i in order[:n_test])
            split["train"][c] = sorted(files[i] for i in order[n_test:])
        return split

    @functools.cached_property
    def _image_shape(self) -> tuple[int, int, int]:
        size, channels = self.builder_config.get("image_size"), self.builder_config.get("channels")
        if size is not None:
            return size[0], size[1], channels
        first = next(f for files in self._files["train"].values() for f in files)
        return (*read_image(first, channels, None).shape[:2], channels)

    def _info(self) -> tfds.core.DatasetInfo:
        classes = sorted(self._files["train"])
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.builder_config.description}: {len(classes)} classes of images.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=self._image_shape),
                "label": tfds.features.ClassLabel(names=classes),
                "file": tfds.features.Text(),   # relative to the dataset's folder
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        files = self._files
        shape = self._image_shape
        size = self.builder_config.get("image_size")
        images = {}
        for split, classes in files.items():   # read them all before writing any
            images[split] = []
            for c, files_of_class in classes.items():
                for path in files_of_class:
                    pixels = read_image(path, shape[2], size)
                    if pixels.shape != shape:
                        raise RawDataError(f"{path}: {pixels.shape[0]}x{pixels.shape[1]} pixels, not "
                                           f"{shape[0]}x{shape[1]} as the first image; set image_size to "
                                           "resize every image")
                    images[split].append((path, c, pixels))
        return {split: self._generate_examples(items) for split, items in images.items()}

    def _generate_examples(self, items):
        root = self._root
        for path, c, pixels in items:
            file = path.relative_to(root).as_posix()
            yield file, {"image": pixels, "label": c, "file": file}


# --- a CSV time series -----------------------------------------------------------------------

def read_series(path: Path, columns: list[str]) -> np.ndarray:
    """`columns` of a CSV file with a header row as a (rows, columns) float array, every
    value a finite number."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:   # a spreadsheet's byte-order mark skipped
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise RawDataError(f"{path}: not a UTF-8 text file") from None
    except (OSError, csv.Error) as e:
        raise RawDataError(f"{path}: unreadable CSV ({e})") from None
    if not rows:
        raise RawDataError(f"{path}: empty (expected a header row, then one row per point)")
    header = [h.strip() for h in rows[0]]
    for name in columns:
        if name not in header:
            raise RawDataError(f"{path}: no column {name!r}; its columns: {', '.join(header)}")
    where = [header.index(name) for name in columns]
    values = np.empty((len(rows) - 1, len(columns)), np.float64)
    for line, row in enumerate(rows[1:], start=2):
        for j, (name, i) in enumerate(zip(columns, where)):
            cell = row[i].strip() if i < len(row) else ""
            if cell == "":
                raise RawDataError(f"{path}, row {line}: missing value in column {name!r}")
            try:
                values[line - 2, j] = float(cell)
            except ValueError:
                raise RawDataError(f"{path}, row {line}: column {name!r} is {cell!r}, not a number") from None
            if not math.isfinite(values[line - 2, j]):
                raise RawDataError(f"{path}, row {line}: missing value in column {name!r} ({cell!r})")
    return values


class _ConfiguredWindow:
    """A windows builder whose window is the user's setting."""

    @property
    def window(self) -> int:
        return self.builder_config.get("window")


class ArchlabUserSeries(_ConfiguredWindow, ForecastingWindows):
    """A CSV time series: windows of its rows -> the forecast column's next value."""

    RELEASE_NOTES = {"1.0.0": "A user's CSV time series."}

    @property
    def test_fraction(self) -> float:
        return self.builder_config.get("test_percent") / 100

    @property
    def channels(self) -> int:
        return 1 + len(self.builder_config.get("inputs"))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        splits = super()._split_generators(dl_manager)
        self.info.metadata["columns"] = [self.builder_config.get("column"), *self.builder_config.get("inputs")]
        return splits

    @property
    def DESCRIPTION(self) -> str:   # noqa: N802 (the base class's attribute)
        inputs = self.builder_config.get("inputs")
        return (f"{self.builder_config.description}: column {self.builder_config.get('column')!r}"
                + (f" with {', '.join(inputs)}" if inputs else ""))

    def _series(self, dl_manager: tfds.download.DownloadManager) -> np.ndarray:
        path = _existing(Path(self.builder_config.path))
        column, inputs = self.builder_config.get("column"), list(self.builder_config.get("inputs"))
        series = read_series(path, [column, *inputs])
        boundary = self.boundary(len(series))
        if min(boundary, len(series) - boundary) <= self.window:
            raise RawDataError(f"{path}: {len(series)} rows, too few for windows of {self.window} "
                               f"(its training and test parts each need more than {self.window})")
        for j, name in enumerate([column, *inputs]):
            if np.ptp(series[:boundary, j]) == 0:
                raise RawDataError(f"{path}: column {name!r} is constant over the training rows "
                                   "(nothing to scale or learn)")
        return series


# --- text ------------------------------------------------------------------------------------

def read_texts(path: Path) -> str:
    """A text file, or the `.txt` files of a folder (and below, by name) joined by newlines."""
    files = sorted(p for p in path.rglob(f"*{TEXT_SUFFIX}") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise RawDataError(f"{path}: no {TEXT_SUFFIX} files in the folder")
    texts = []
    for file in files:
        raw = file.read_bytes()
        if b"\x00" in raw:
            raise RawDataError(f"{file}: a binary file (it holds NUL bytes), not text")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RawDataError(f"{file}: not UTF-8 text (byte {e.start})") from None
        if not text.strip():
            raise RawDataError(f"{file}: empty")
        texts.append(text.removesuffix("\n"))
    return "\n".join(texts) + "\n"


class ArchlabUserText(_ConfiguredWindow, CharacterWindows):
    """A text file or a folder of them, as character windows; the end held out."""

    RELEASE_NOTES = {"1.0.0": "A user's text."}

    @property
    def DESCRIPTION(self) -> str:   # noqa: N802 (the base class's attribute)
        return self.builder_config.description

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        path = _existing(Path(self.builder_config.path))
        text = read_texts(path)
        boundary = int(round(len(text) * (1 - self.builder_config.get("test_percent") / 100)))
        if min(boundary, len(text) - boundary) <= self.window:
            raise RawDataError(f"{path}: {len(text)} characters, too few for windows of {self.window} "
                               f"(its training and held-out parts each need more than {self.window})")
        return {"train": self._generate_examples(text[:boundary]), "test": self._generate_examples(text[boundary:])}


BUILDERS = {"images": ArchlabUserImages, "csv": ArchlabUserSeries, "text": ArchlabUserText}
