"""TFDS builders of ours for token sequences (work in progress for the seq2seq issue).

- `ArchlabAddition`: integer addition as text, "535+61" -> "596": operands of 1 to
  `DIGITS` digits (the digit count drawn uniformly first, as in the Keras addition
  example), generated from a fixed seed; no question appears in both splits.

Tokens: 0 padding, 1 start (fed to a decoder first), 2 end, then "0".."9" and "+".
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

VOCABULARY = ["<pad>", "<start>", "<end>", *"0123456789+"]
PAD, START, END = 0, 1, 2
_INDEX = {c: i for i, c in enumerate(VOCABULARY)}


def encode(text: str, length: int, end: bool = False) -> np.ndarray:
    """Token ids of `text` (then END if `end`), zero-padded to `length`."""
    ids = [_INDEX[c] for c in text] + ([END] if end else [])
    if len(ids) > length:
        raise ValueError(f"{text!r} needs {len(ids)} tokens, more than {length}")
    return np.array(ids + [PAD] * (length - len(ids)), np.int32)


def decode(ids) -> str:
    """The text of token ids, up to the first END (padding and start skipped)."""
    out = []
    for i in ids:
        if i == END:
            break
        if i > END:
            out.append(VOCABULARY[i])
    return "".join(out)


class ArchlabAddition(tfds.core.GeneratorBasedBuilder):
    """Integer addition as text: question "a+b" -> answer "a+b's value"."""

    ARCHLAB_TASK = "sequence_to_sequence"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "50,000 / 5,000 disjoint questions, operands of 1-3 digits."}
    DIGITS = 3
    SPLITS = {"train": 50_000, "test": 5_000}
    SEED = 0

    @property
    def question_length(self) -> int:
        return 2 * self.DIGITS + 1

    @property
    def answer_length(self) -> int:
        return self.DIGITS + 2   # the sum's digits and END

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Integer addition as text: operands of 1-{self.DIGITS} digits, "
                        "question and answer as token ids (0 padding, 2 end).",
            features=tfds.features.FeaturesDict({
                "question": tfds.features.Tensor(shape=(self.question_length,), dtype=np.int32),
                "answer": tfds.features.Tensor(shape=(self.answer_length,), dtype=np.int32),
                "text": tfds.features.Text(),
            }),
            supervised_keys=("question", "answer"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        questions = self._questions(sum(self.SPLITS.values()))
        start, generators = 0, {}
        for split, n in self.SPLITS.items():
            generators[split] = self._generate_examples(questions[start:start + n])
            start += n
        return generators

    def _questions(self, n: int) -> list[tuple[int, int]]:
        """`n` distinct (a, b), each operand's digit count uniform in 1..DIGITS."""
        rng = np.random.default_rng(self.SEED)
        seen: dict[tuple[int, int], None] = {}
        while len(seen) < n:
            a, b = (int(rng.integers(10 ** (d - 1) if d > 1 else 0, 10 ** d))
                    for d in rng.integers(1, self.DIGITS + 1, 2))
            seen.setdefault((a, b), None)
        return list(seen)

    def _generate_examples(self, questions):
        for i, (a, b) in enumerate(questions):
            question = f"{a}+{b}"
            yield i, {"question": encode(question, self.question_length),
                      "answer": encode(str(a + b), self.answer_length, end=True),
                      "text": f"{question}={a + b}"}
