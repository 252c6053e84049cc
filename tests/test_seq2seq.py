"""Encoder–decoder (work in progress): the addition builder, decoding, step models."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import models
from models import seq2seq
from models.registry import Head
from pipelines.datasets.text import VOCABULARY, ArchlabAddition, decode, encode


@pytest.fixture(scope="module")
def addition(tmp_path_factory):
    builder = ArchlabAddition(data_dir=tmp_path_factory.mktemp("addition"))
    builder.download_and_prepare()
    return builder


def test_addition_answers_are_the_sums_and_the_splits_are_disjoint(addition):
    train = list(addition.as_dataset(split="train").as_numpy_iterator())
    test = list(addition.as_dataset(split="test").as_numpy_iterator())
    assert (len(train), len(test)) == (50_000, 5_000)
    questions = [decode(e["question"]) for e in train]
    assert not set(questions) & {decode(e["question"]) for e in test}
    for e in train[:500] + test[:500]:
        a, b = map(int, decode(e["question"]).split("+"))
        assert decode(e["answer"]) == str(a + b) and e["text"].decode() == f"{a}+{b}={a + b}"
    lengths = {len(q.split("+")[0]) for q in questions}
    assert lengths == {1, 2, 3}


def test_encode_decode_round_trip_and_refuse_overlong_text():
    ids = encode("12+7", 7)
    assert ids.tolist() == [4, 5, 13, 10, 0, 0, 0] and decode(ids) == "12+7"
    assert decode(encode("19", 4, end=True)) == "19"
    with pytest.raises(ValueError, match="more than 3"):
        encode("1234", 3)


def _model(cell):
    model = models.build("seq2seq", (7,), Head(len(VOCABULARY), per_step=True),
                         {"cell": cell, "units": 16, "layers": 2, "embedding_dim": 8})
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_greedy_decoding_with_step_models_is_the_full_model_fed_its_own_outputs(cell):
    model = _model(cell)
    source = np.stack([encode(q, 7) for q in ("12+7", "999+1", "5+5")])
    encoder, decoder = seq2seq.step_models(model)
    greedy = seq2seq.greedy_decode(encoder, decoder, source, 5)
    for i in range(len(source)):
        tokens = [seq2seq.START]
        for _ in range(5):
            probabilities = model.predict([source[i:i + 1], np.array([tokens], np.int32)], verbose=0)
            tokens.append(int(probabilities[0, -1].argmax()))
            if tokens[-1] == seq2seq.END:
                break
        expected = np.zeros(5, np.int32)
        expected[:len(tokens) - 1] = tokens[1:]
        np.testing.assert_array_equal(greedy[i], expected)
    assert np.array_equal(seq2seq.beam_decode(encoder, decoder, source, 5, beam_width=1), greedy)


def test_step_models_convert_to_builtin_tflite_ops():
    encoder, decoder = seq2seq.step_models(_model("lstm"), batch_size=1)
    for part in (encoder, decoder):
        converter = tf.lite.TFLiteConverter.from_keras_model(part)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        assert len(converter.convert()) > 0


def test_fortunes_split_by_text_and_windows_shift_by_one(tmp_path):
    import tensorflow_datasets as tfds

    from pipelines.datasets.text import CHARACTERS, ArchlabFortunes, held_out, read_fortunes

    raw = tmp_path / "fortunes"
    raw.mkdir()
    cookies = [f"Fortune number {i}:\n\tsay {i * 7} twice\n\t\t-- Anon" for i in range(400)]
    (raw / "a").write_text("\n%\n".join(cookies[:300]) + "\n%\n")
    (raw / "b").write_text("\n%\n".join(cookies[250:]) + "\n%\n")   # 50 repeated from a
    fortunes = read_fortunes(raw)
    assert len(fortunes) == 450 and fortunes[0] == cookies[0]
    builder = ArchlabFortunes(data_dir=tmp_path / "tfds")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw)))
    for split, keep in (("train", False), ("test", True)):
        examples = sorted(builder.as_dataset(split=split).as_numpy_iterator(), key=lambda e: e["position"])
        got = "".join(CHARACTERS[i] for e in examples for i in e["window"])
        expected = "\n".join(f for f in fortunes if held_out(f) == keep) + "\n"
        assert len(got) == len(examples) * ArchlabFortunes.WINDOW and got == expected[:len(got)]
        assert len(expected) - len(got) <= ArchlabFortunes.WINDOW
        for e in examples:
            np.testing.assert_array_equal(e["window"][1:], e["target"][:-1])
    repeated = cookies[250:300]   # in both files, so held out or kept together
    assert any(held_out(c) for c in cookies) and not all(held_out(c) for c in cookies)
    assert all(fortunes.count(c) == 2 for c in repeated)
