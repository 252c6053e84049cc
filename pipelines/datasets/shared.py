"""What several dataset builders share: a series cut into forecasting windows, and a text
cut into character windows (the embedded datasets' builders and the user's, `user.py`)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

TEST_FRACTION = 0.2

CHARACTERS = ["<unk>", "\n", "\t", *(chr(c) for c in range(32, 127))]
_CHARACTER_INDEX = {c: i for i, c in enumerate(CHARACTERS)}


class Windows(tfds.core.GeneratorBasedBuilder):
    """A builder of windows of `window` steps (the class's `WINDOW` unless a config sets it)."""

    VERSION = tfds.core.Version("1.0.0")
    WINDOW = 32
    DESCRIPTION = ""
    HOMEPAGE = ""

    @property
    def window(self) -> int:
        return self.WINDOW


class ForecastingWindows(Windows):
    """A series as one-step forecasting windows: `window` standardised points -> the next
    point of its first column (the forecast one; any other columns are inputs beside it).
    Each column is scaled with the mean and standard deviation of the first
    1 - `test_fraction` of the series (kept in the dataset's metadata, `metadata.json`); the
    test split's windows lie wholly in the rest.
    `position` (the target's index in the series) lets a split be read back as one
    contiguous series (`datasets.series`)."""

    ARCHLAB_TASK = "forecasting"

    @property
    def test_fraction(self) -> float:
        return TEST_FRACTION

    @property
    def channels(self) -> int:
        return 1

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.DESCRIPTION}: {self.window} standardised points -> the next point.",
            features=tfds.features.FeaturesDict({
                "window": tfds.features.Tensor(shape=(self.window, self.channels), dtype=np.float32),
                "target": tfds.features.Tensor(shape=(), dtype=np.float32),
                "position": np.int32,   # index of the target point in the series
            }),
            supervised_keys=("window", "target"),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(),   # the scaling: mean and std per column
        )

    def _series(self, dl_manager: tfds.download.DownloadManager) -> np.ndarray:
        """The series, (points,) or (points, channels)."""
        raise NotImplementedError

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        series = self._series(dl_manager)
        series = series.reshape(len(series), -1)
        boundary = self.boundary(len(series))
        train = series[:boundary]
        mean, std = train.mean(axis=0), train.std(axis=0)
        self.info.metadata.update(mean=mean.tolist(), std=std.tolist())
        scaled = ((series - mean) / std).astype(np.float32)
        return {"train": self._generate_examples(scaled, 0, boundary),
                "test": self._generate_examples(scaled, boundary, len(series))}

    def boundary(self, points: int) -> int:
        """The first point of the test part."""
        return int(round(points * (1 - self.test_fraction)))

    def _generate_examples(self, scaled: np.ndarray, start: int, stop: int):
        for target in range(start + self.window, stop):
            yield target, {"window": scaled[target - self.window:target],
                           "target": scaled[target, 0], "position": target}


def characters(text: str) -> np.ndarray:
    """Character ids of `CHARACTERS` (0 for any other character)."""
    return np.array([_CHARACTER_INDEX.get(c, 0) for c in text], np.int32)


def character_windows(text: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A text cut into consecutive windows of `width` character ids -> the same windows one
    character on, (N, width) each; the last partial window is dropped."""
    ids = characters(text)
    n = max((len(ids) - 1) // width, 0)
    return ids[:n * width].reshape(n, width), ids[1:n * width + 1].reshape(n, width)


class CharacterWindows(Windows):
    """A text per split as character windows for a language model: `window` characters ->
    the same window one character on, in text order (a split's windows, concatenated, are
    its text). Characters: 0 unknown (anything but printable ASCII, newline and tab),
    1 newline, 2 tab, 3.. the printable ASCII characters."""

    ARCHLAB_TASK = "language_modelling"
    VOCABULARY = CHARACTERS
    WINDOW = 100

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.DESCRIPTION}: {self.window} characters -> the next character at each step.",
            features=tfds.features.FeaturesDict({
                "window": tfds.features.Tensor(shape=(self.window,), dtype=np.int32),
                "target": tfds.features.Tensor(shape=(self.window,), dtype=np.int32),
                "position": np.int32,   # the window's first character in the split's text
            }),
            supervised_keys=("window", "target"),
            homepage=self.HOMEPAGE,
            disable_shuffling=True,   # windows stay in text order: a split reads as one text
        )

    def _generate_examples(self, text: str):
        windows, targets = character_windows(text, self.window)
        for i, (window, target) in enumerate(zip(windows, targets)):
            yield i, {"window": window, "target": target, "position": i * self.window}
