"""TFDS builders of ours for sequence data: two real series and two generated tasks.

- `ArchlabJapaneseVowels`: UCI Japanese Vowels from the `.ts` files inside the aeon wheel
  (270 train / 370 test utterances of 9 speakers, 12 LPC cepstrum channels, 7-29 steps).
  Each channel is standardised with training statistics (over real steps only); the
  series are zero-padded at the end to 29 steps, so `Masking(0.0)` skips the padding.
- `ArchlabSantaFeLaser`: the Santa Fe laser series (10,093 points, the `.npy` inside the
  reservoirpy wheel) as one-step forecasting windows: `WINDOW` past points -> the next.
  Scaled with the training part's mean and standard deviation; the last `TEST_FRACTION`
  of the series is the test split, whose windows lie wholly inside it.
- `ArchlabMackeyGlass`: the Mackey–Glass series, τ = 17 (chaotic), 10,000 points generated
  with reservoirpy's equation, defaults and seed (`mackey_glass`), as windows of 64 -> the
  next point, scaled and split like the laser.
- `ArchlabAddingProblem` (Hochreiter & Schmidhuber 1997): T steps of (value ~ U[0, 1],
  marker); one marker in each half; the target is the sum of the two marked values.
  Predicting the mean, 1, whatever the input gives MSE 1/6: the no-memory baseline.
- `ArchlabCopyTask` (Arjovsky et al. 2016): 10 symbols from 1..8, T-1 blanks, the
  delimiter 9, 10 blanks; the target is blanks and then the 10 symbols: a memory of T steps.

The generated tasks take T from their builder config: `adding_problem/t100` and
`copy_task/t50` name T = 100 and T = 50; any T >= 2 works, not only the listed configs.
They are seeded, so the same T gives the same examples.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pipelines.datasets import RawDataError
from pipelines.datasets.shared import TEST_FRACTION, ForecastingWindows

JAPANESE_VOWELS_FILES = {"train": "JapaneseVowels_TRAIN.ts", "test": "JapaneseVowels_TEST.ts"}
JAPANESE_VOWELS_CHANNELS = 12
JAPANESE_VOWELS_MAX_LENGTH = 29
JAPANESE_VOWELS_SPEAKERS = [f"speaker_{i}" for i in range(1, 10)]

SANTA_FE_FILE = "santafe_laser.npy"
SANTA_FE_POINTS = 10_093
WINDOW = 32


def read_ts(path: Path, channels: int) -> tuple[list[np.ndarray], list[str]]:
    """A multivariate `.ts` file (sktime/aeon format): per line, channels separated by
    ':' with comma-separated values, the class label last. Returns (steps, channels) arrays."""
    if not path.exists():
        raise RawDataError(f"missing raw data file {path}; run `make data`")
    series, labels = [], []
    in_data = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        try:
            values = [np.array(d.split(","), dtype=np.float32) for d in dims]
        except ValueError as e:
            raise RawDataError(f"corrupt raw data file {path}, line {number}: {e}") from None
        if len(values) != channels or len({len(v) for v in values}) != 1:
            raise RawDataError(f"corrupt raw data file {path}, line {number}: expected "
                               f"{channels} channels of equal length")
        series.append(np.stack(values, axis=-1))
        labels.append(label.strip())
    if not series:
        raise RawDataError(f"corrupt raw data file {path}: no @data section with series")
    return series, labels


class ArchlabJapaneseVowels(tfds.core.GeneratorBasedBuilder):
    """Japanese Vowels (UCI) from aeon's `.ts` files: which of 9 speakers said /ae/."""

    ARCHLAB_TASK = "sequence_classification"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "aeon 1.6.0's JapaneseVowels_TRAIN/TEST.ts, standardised, zero-padded."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `make data`: it extracts the .ts files into data/japanese_vowels/."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="9 male speakers saying /ae/: 12 LPC cepstrum coefficients per frame, "
                        "7-29 frames, zero-padded to 29 (standardised with training statistics).",
            features=tfds.features.FeaturesDict({
                "sequence": tfds.features.Tensor(
                    shape=(JAPANESE_VOWELS_MAX_LENGTH, JAPANESE_VOWELS_CHANNELS), dtype=np.float32),
                "length": np.int32,
                "label": tfds.features.ClassLabel(names=JAPANESE_VOWELS_SPEAKERS),
            }),
            supervised_keys=("sequence", "label"),
            homepage="https://archive.ics.uci.edu/dataset/128/japanese+vowels",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        splits = {split: read_ts(root / file, JAPANESE_VOWELS_CHANNELS)
                  for split, file in JAPANESE_VOWELS_FILES.items()}
        steps = np.concatenate(splits["train"][0])  # training statistics, real steps only
        mean, std = steps.mean(axis=0), steps.std(axis=0)
        return {split: self._generate_examples(series, labels, mean, std, root / JAPANESE_VOWELS_FILES[split])
                for split, (series, labels) in splits.items()}

    def _generate_examples(self, series, labels, mean, std, path: Path):
        for i, (steps, label) in enumerate(zip(series, labels)):
            if len(steps) > JAPANESE_VOWELS_MAX_LENGTH or f"speaker_{label}" not in JAPANESE_VOWELS_SPEAKERS:
                raise RawDataError(f"corrupt raw data file {path}: series {i} has {len(steps)} "
                                   f"steps and label {label!r}")
            padded = np.zeros((JAPANESE_VOWELS_MAX_LENGTH, JAPANESE_VOWELS_CHANNELS), np.float32)
            padded[:len(steps)] = (steps - mean) / std
            yield i, {"sequence": padded, "length": len(steps), "label": f"speaker_{label}"}


def read_santa_fe(path: Path) -> np.ndarray:
    if not path.exists():
        raise RawDataError(f"missing raw data file {path}; run `make data`")
    try:
        series = np.load(path).astype(np.float32).reshape(-1)
    except (OSError, ValueError) as e:
        raise RawDataError(f"corrupt raw data file {path}: {e}") from None
    if len(series) < 4 * WINDOW:
        raise RawDataError(f"corrupt raw data file {path}: {len(series)} points, too short "
                           f"for windows of {WINDOW}")
    return series


class ArchlabSantaFeLaser(ForecastingWindows):
    """The Santa Fe laser series as one-step forecasting windows."""

    RELEASE_NOTES = {"1.0.0": f"reservoirpy 0.4.2's santafe_laser.npy; windows of {WINDOW}, "
                              f"the last {TEST_FRACTION:.0%} as test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `make data`: it extracts santafe_laser.npy into data/santafe_laser/."
    DESCRIPTION = "Far-infrared laser in a chaotic state (Santa Fe competition, data set A)"
    HOMEPAGE = "https://web.cecs.pdx.edu/~mcnames/DataSets/index.html"

    def _series(self, dl_manager: tfds.download.DownloadManager) -> np.ndarray:
        return read_santa_fe(Path(dl_manager.manual_dir) / SANTA_FE_FILE)


def mackey_glass(n_timesteps: int, tau: int = 17, a: float = 0.2, b: float = 0.1, n: int = 10,
                 x0: float = 1.2, h: float = 1.0, seed: int = 5555) -> np.ndarray:
    """The Mackey–Glass delay differential equation dx/dt = a x(t-τ) / (1 + x(t-τ)^n) - b x(t),
    one point per `h`: reservoirpy 0.4.2's `datasets.mackey_glass`, the same equation,
    defaults (τ = 17, chaotic), default seed and numbers. Its history before t = 0 is
    x0 ± 0.1, uniform, drawn from `seed`; each step is reservoirpy's RK4 scheme with
    x(t-τ) held over the step."""
    delay = int(np.floor(tau / h))
    rng = np.random.default_rng(seed)
    x = np.empty(delay + n_timesteps)
    x[:delay] = x0 * np.ones(delay) + 0.2 * (rng.random(delay) - 0.5)
    xt = x0
    for i in range(delay, delay + n_timesteps):
        x[i] = xt
        xtau = x[i - delay] if tau > 0 else 0.0
        k1 = -b * h * xt + a * xtau / (1 + xtau ** n)
        k2 = 2 * k1 - b * h * k1
        k3 = 2 * k1 - b * h * k2
        k4 = k1 - b * h * k3
        xt = xt + (k1 + k2 + k3 + k4) / 6
    return x[delay:]


class ArchlabMackeyGlass(ForecastingWindows):
    """Mackey–Glass τ = 17 (generated, seeded) as one-step forecasting windows."""

    POINTS = 10_000
    WINDOW = 64
    RELEASE_NOTES = {"1.0.0": f"{POINTS} points of tau = 17 from reservoirpy's seed 5555; windows of "
                              f"{WINDOW}, the last {TEST_FRACTION:.0%} as test."}
    DESCRIPTION = f"Mackey-Glass delay differential equation, tau = 17 (chaotic), {POINTS} points"
    HOMEPAGE = "https://doi.org/10.1126/science.267326"

    def _series(self, dl_manager: tfds.download.DownloadManager) -> np.ndarray:
        return mackey_glass(self.POINTS)


@dataclasses.dataclass
class LengthConfig(tfds.core.BuilderConfig):
    """A generated task's config: sequence length T and split sizes."""

    length: int = 100
    train_examples: int = 10_000
    test_examples: int = 1_000


def length_config(config_name: str, default: LengthConfig) -> LengthConfig:
    """`t<T>` as a config, e.g. `t400`; the split sizes come from `default`."""
    match = re.fullmatch(r"t(\d+)", config_name)
    if not match or int(match.group(1)) < 2:
        raise ValueError(f"config {config_name!r}: expected t<T> with T >= 2, e.g. t100")
    return dataclasses.replace(default, name=config_name, length=int(match.group(1)))


class _GeneratedSequences(tfds.core.GeneratorBasedBuilder):
    """Seeded synthetic sequences of length T (the builder config); no raw data."""

    VERSION = tfds.core.Version("1.0.0")
    LENGTHS = (50, 100, 200, 400)
    SEED = 0

    @classmethod
    def named_config(cls, name: str) -> LengthConfig:
        """`t<T>` as a config, e.g. `t100`; the split sizes come from the first listed config."""
        return length_config(name, cls.BUILDER_CONFIGS[0])

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        # Distinct, fixed streams per split and T: the test examples are no training examples.
        return {split: self._generate_examples(np.random.default_rng([self.SEED, config.length, i]), n)
                for i, (split, n) in enumerate([("train", config.train_examples),
                                                ("test", config.test_examples)])}


class ArchlabAddingProblem(_GeneratedSequences):
    """The adding problem: sum the two marked values of a length-T sequence."""

    ARCHLAB_TASK = "sequence_regression"
    BUILDER_CONFIGS = [LengthConfig(name=f"t{t}", length=t) for t in _GeneratedSequences.LENGTHS]
    RELEASE_NOTES = {"1.0.0": "Generated: values U[0,1], one marker in each half."}

    def _info(self) -> tfds.core.DatasetInfo:
        t = self.builder_config.length
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"The adding problem, T = {t}: (value, marker) per step, target = the "
                        "sum of the two marked values (no-memory MSE 1/6).",
            features=tfds.features.FeaturesDict({
                "sequence": tfds.features.Tensor(shape=(t, 2), dtype=np.float32),
                "target": tfds.features.Tensor(shape=(), dtype=np.float32),
            }),
            supervised_keys=("sequence", "target"),
            homepage="https://doi.org/10.1162/neco.1997.9.8.1735",
        )

    def _generate_examples(self, rng: np.random.Generator, n: int):
        t = self.builder_config.length
        values = rng.uniform(0.0, 1.0, (n, t)).astype(np.float32)
        first = rng.integers(0, t // 2, n)
        second = rng.integers(t // 2, t, n)
        markers = np.zeros((n, t), np.float32)
        markers[np.arange(n), first] = 1.0
        markers[np.arange(n), second] = 1.0
        targets = values[np.arange(n), first] + values[np.arange(n), second]
        for i in range(n):
            yield i, {"sequence": np.stack([values[i], markers[i]], axis=-1), "target": targets[i]}


COPY_SYMBOLS = 10      # symbols to remember
COPY_ALPHABET = 8      # drawn from 1..8
COPY_BLANK, COPY_DELIMITER = 0, 9


class ArchlabCopyTask(_GeneratedSequences):
    """The copy task: read 10 symbols, wait T steps, write them back."""

    ARCHLAB_TASK = "sequence_tagging"
    BUILDER_CONFIGS = [LengthConfig(name=f"t{t}", length=t, train_examples=5_000, test_examples=500)
                       for t in _GeneratedSequences.LENGTHS]
    RELEASE_NOTES = {"1.0.0": "Generated: 10 symbols of 1..8, T-1 blanks, delimiter 9, 10 blanks."}

    def _info(self) -> tfds.core.DatasetInfo:
        steps = self.builder_config.length + 2 * COPY_SYMBOLS
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"The copy task, T = {self.builder_config.length}: tokens in, the same "
                        f"{COPY_SYMBOLS} symbols out after the delimiter ({steps} steps).",
            features=tfds.features.FeaturesDict({
                # one-hot tokens: 0 blank, 1..8 symbols, 9 delimiter
                "sequence": tfds.features.Tensor(shape=(steps, COPY_DELIMITER + 1), dtype=np.uint8),
                "target": tfds.features.Sequence(
                    tfds.features.ClassLabel(names=["blank", *map(str, range(1, 9))]), length=steps),
            }),
            supervised_keys=("sequence", "target"),
            homepage="https://arxiv.org/abs/1511.06464",
        )

    def _generate_examples(self, rng: np.random.Generator, n: int):
        t = self.builder_config.length
        steps = t + 2 * COPY_SYMBOLS
        symbols = rng.integers(1, COPY_ALPHABET + 1, (n, COPY_SYMBOLS))
        one_hot = np.eye(COPY_DELIMITER + 1, dtype=np.uint8)
        for i in range(n):
            tokens = np.full(steps, COPY_BLANK)
            tokens[:COPY_SYMBOLS] = symbols[i]
            tokens[COPY_SYMBOLS + t - 1] = COPY_DELIMITER
            target = np.full(steps, COPY_BLANK, np.int64)
            target[-COPY_SYMBOLS:] = symbols[i]
            yield i, {"sequence": one_hot[tokens], "target": target}
