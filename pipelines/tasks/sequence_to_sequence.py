"""Sequence to sequence: question tokens -> answer tokens (integer addition as text).

    test_exact_match        the share of answers right in every token (END included),
                            decoded greedily through the step models
    test_char_accuracy      the answer's characters right at their position
    test_exact_match_beam   with `evaluation.beam_width` > 1, decoded by beam search

The model trains with teacher forcing: (question, START + the answer but its last token)
-> the answer.
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
from pipelines.tasks.tokens import TokenTask, text


class Seq2SeqEvaluation(base.Evaluation):
    beam_width: int = Field(default=1, ge=1)   # > 1: also decode by beam search


def exact_match(outputs: np.ndarray, targets: np.ndarray) -> float:
    """The share of answers right in every token (END included)."""
    return float(np.mean(np.all(outputs == targets, axis=1)))


def plot_exact_match_by_length(lengths: np.ndarray, correct: np.ndarray, path: Path) -> None:
    """Seq2seq: the share of whole answers right, by the length of the question."""
    values = sorted(set(lengths.tolist()))
    shares = [correct[lengths == v].mean() for v in values]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bars = ax.bar([str(v) for v in values], shares)
    ax.bar_label(bars, labels=[f"{s:.3f}\n(n={int((lengths == v).sum())})" for s, v in zip(shares, values)],
                 fontsize=7)
    ax.set_xlabel("question length (tokens)")
    ax.set_ylabel("exact match (greedy)")
    ax.set_ylim(0, 1.15)
    ax.grid(alpha=0.3, axis="y")
    save(fig, path)


class SequenceToSequence(TokenTask):
    name = "sequence_to_sequence"
    headline = "exact_match"
    higher_is_better = True
    Evaluation = Seq2SeqEvaluation

    def preprocess(self, question, answer):
        """(question, answer) -> ((question, decoder input: START then the answer but its
        last token), answer): the decoder reads the true previous token while training."""
        answer = tf.cast(answer, tf.int32)
        decoder_input = tf.concat([tf.constant([seq2seq.START], tf.int32), answer[:-1]], axis=0)
        return (tf.cast(question, tf.int32), decoder_input), answer

    def predict(self, model, inputs) -> np.ndarray:
        """Greedy decoding with the model's step models: the answer tokens (N, answer
        length), END included, PAD after it."""
        parts = seq2seq.step_models(model)
        return seq2seq.greedy_decode(parts["encoder"], parts["decoder"], inputs[0], max_length=inputs[1].shape[1])

    def parity_reference(self, model, inputs, outputs):
        """The teacher-forced probabilities (the greedy answers are compared on their own)."""
        return model.predict(inputs, batch_size=base.PREDICT_BATCH, verbose=0)

    def score(self, outputs, targets) -> float:
        return exact_match(outputs, targets)

    def details(self, outputs, targets) -> dict[str, float]:
        """Per-character accuracy: the answer's characters (not END, not padding) predicted
        right at their position."""
        chars = targets > seq2seq.END
        return {"test_char_accuracy": float(np.mean(outputs[chars] == targets[chars]))}

    def table(self, outputs, targets, vocabulary, inputs=None) -> pd.DataFrame:
        return pd.DataFrame({"question": [text(q, vocabulary) for q in inputs[0]],
                             "answer": [text(t, vocabulary) for t in targets],
                             "predicted": [text(o, vocabulary) for o in outputs],
                             "correct": np.all(outputs == targets, axis=1)})

    def plot(self, outputs, targets, vocabulary, out_dir: Path, inputs=None) -> list[Path]:
        path = out_dir / "exact_match_by_length.png"
        plot_exact_match_by_length((inputs[0] != seq2seq.PAD).sum(axis=1), np.all(outputs == targets, axis=1), path)
        return [path]

    def extra(self, model, splits, inputs, targets, out_dir: Path,
              settings: Seq2SeqEvaluation) -> tuple[dict[str, float], list[Path]]:
        """With `beam_width` > 1, the test questions decoded by beam search too."""
        if settings.beam_width <= 1:
            return {}, []
        parts = seq2seq.step_models(model)
        beam = seq2seq.beam_decode(parts["encoder"], parts["decoder"], inputs[0], inputs[1].shape[1],
                                   settings.beam_width)
        return {"test_exact_match_beam": exact_match(beam, targets), "beam_width": settings.beam_width}, []

    def edge_predict(self, generator, inputs, teacher_forced) -> np.ndarray:
        """Greedy answers from the TFLite step models, padded like `predict`'s."""
        source, decoder_input = inputs
        out = np.full(decoder_input.shape, seq2seq.PAD, np.int32)
        for i, s in enumerate(source):
            tokens = generator.greedy(s, [seq2seq.START], decoder_input.shape[1], seq2seq.END)
            out[i, :len(tokens)] = tokens
        return out

    def edge_spec(self, vocabulary, inputs) -> dict:
        return {"task": self.name, "vocabulary": vocabulary, "start": seq2seq.START, "end": seq2seq.END,
                "source_length": int(inputs[0].shape[1]), "max_length": int(inputs[1].shape[1])}


TASK = SequenceToSequence()
