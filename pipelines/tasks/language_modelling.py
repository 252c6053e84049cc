"""Language modelling: text -> the next character at every step (character windows cut
from one text, in order).

    test_bpc       bits per character on the held-out text, read as one text (the state
                   carried from each window into the next)
    baseline_bpc   the entropy of the test text's own character frequencies: the fewest bits
                   per character any unigram model (one that ignores context) can score

Text sampled at each of `evaluation.temperatures` (`samples` samples of `sample_length`
characters from `sample_seed`, each started after a newline) goes to `samples.txt`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from pydantic import Field

from models import seq2seq
from pipelines.plots import plt, save
from pipelines.tasks import base
from pipelines.tasks.tokens import TokenTask

EDGE_GENERATE = 200   # characters the edge runner's language model writes by default


class LanguageModellingEvaluation(base.Evaluation):
    temperatures: list[float] = Field(default=[0.5, 1.0], min_length=1)
    samples: int = Field(default=3, ge=1)
    sample_length: int = Field(default=300, ge=1)
    sample_seed: int = Field(default=0, ge=0)


def target_bits(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log2 of the probability given to each target character."""
    p = np.take_along_axis(outputs, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return -np.log2(np.maximum(p.astype(np.float64), 1e-12))


def bits_per_character(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(target_bits(outputs, targets)))


def unigram_bpc(targets: np.ndarray) -> float:
    counts = np.bincount(targets.ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def plot_bpc_along_text(bpc: np.ndarray, baseline: float, path: Path, smooth: int = 25) -> None:
    """A language model's bits per character along the held-out text, window by window
    (and a running mean over `smooth` windows), against the unigram baseline."""
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(np.arange(len(bpc)), bpc, lw=0.5, alpha=0.4, label="per window")
    if len(bpc) >= smooth:
        running = np.convolve(bpc, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(smooth - 1, len(bpc)), running, lw=1.4, label=f"running mean of {smooth}")
    ax.axhline(bpc.mean(), color="black", lw=0.8, label=f"model {bpc.mean():.3f}")
    ax.axhline(baseline, color="grey", lw=0.8, ls="--", label=f"unigram {baseline:.3f}")
    ax.set_xlabel("window of the held-out text")
    ax.set_ylabel("bits per character")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    save(fig, path)


class LanguageModelling(TokenTask):
    name = "language_modelling"
    headline = "bpc"
    higher_is_better = False
    Evaluation = LanguageModellingEvaluation

    def preprocess(self, window, target):
        return tf.cast(window, tf.int32), tf.cast(target, tf.int32)

    def predict(self, model, inputs) -> np.ndarray:
        """The windows of a split are consecutive pieces of its text: the language model
        reads them as one text, its state carried from each window into the next (not reset
        to zero at every window); the probabilities per window, (N, window, V)."""
        return seq2seq.read(model, inputs.reshape(-1)).reshape(inputs.shape + (-1,))

    def score(self, outputs, targets) -> float:
        return bits_per_character(outputs, targets)

    def baselines(self, inputs, targets) -> dict[str, float]:
        return {"baseline_bpc": unigram_bpc(targets)}

    def table(self, outputs, targets, vocabulary, inputs=None) -> pd.DataFrame:
        return pd.DataFrame({"bpc": target_bits(outputs, targets).mean(axis=1),
                             "text": ["".join(vocabulary[i] for i in w) for w in inputs]})

    def plot(self, outputs, targets, vocabulary, out_dir: Path, inputs=None) -> list[Path]:
        path = out_dir / "bpc_along_text.png"
        plot_bpc_along_text(target_bits(outputs, targets).mean(axis=1), unigram_bpc(targets), path)
        return [path]

    def extra(self, model, splits, inputs, targets, out_dir: Path,
              settings: LanguageModellingEvaluation) -> tuple[dict[str, float], list[Path]]:
        """Text drawn from the language model at each temperature, each sample started after
        a newline (a fortune's start), written to `samples.txt`."""
        vocabulary = splits.vocabulary
        decoder = seq2seq.step_models(model)["decoder"]
        rng = np.random.default_rng(settings.sample_seed)
        prime = np.full((settings.samples, 1), vocabulary.index("\n"), np.int32)
        lines = []
        for temperature in settings.temperatures:
            drawn = seq2seq.sample(decoder, prime, settings.sample_length, temperature, rng)
            for i, ids in enumerate(drawn):
                lines += [f"=== temperature {temperature}, sample {i + 1} ===",
                          "".join(vocabulary[t] for t in ids), ""]
        path = out_dir / "samples.txt"
        path.write_text("\n".join(lines))
        return {}, [path]

    def edge_teacher_forced(self, generator, inputs, desc: str) -> np.ndarray:
        """The windows read as one text, as `predict` reads them."""
        return generator.teacher_forced(None, inputs.reshape(-1)).reshape(inputs.shape + (-1,))

    def edge_predict(self, generator, inputs, teacher_forced) -> np.ndarray:
        return teacher_forced

    def edge_spec(self, vocabulary, inputs) -> dict:
        unknown = vocabulary.index("<unk>") if "<unk>" in vocabulary else None
        return {"task": self.name, "vocabulary": vocabulary, "start": vocabulary.index("\n"), "end": None,
                "unknown": unknown, "max_length": EDGE_GENERATE}


TASK = LanguageModelling()
