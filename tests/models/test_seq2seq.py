"""Encoder–decoder and language model: the addition and fortunes builders, decoding, step
models, and both tasks through the train, evaluate and export stages and the edge runner."""

from __future__ import annotations

import json

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


def _model(cell, reverse_source=False):
    model = models.build("seq2seq", (7,), Head(len(VOCABULARY), per_step=True),
                         {"cell": cell, "units": 16, "layers": 2, "embedding_dim": 8,
                          "reverse_source": reverse_source}, dtype="int32")
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("cell,reverse", [("lstm", False), ("gru", True)])
def test_greedy_decoding_with_step_models_is_the_full_model_fed_its_own_outputs(cell, reverse):
    model = _model(cell, reverse)
    source = np.stack([encode(q, 7) for q in ("12+7", "999+1", "5+5")])
    parts = seq2seq.step_models(model)
    encoder, decoder = parts["encoder"], parts["decoder"]
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


def test_beam_search_wide_enough_finds_the_most_probable_answer():
    """A beam of V^2 keeps every 2-token prefix: over 3 steps it must find the best of all
    V^3 outputs (scored up to their first END) that exhaustive search finds."""
    import itertools

    model = _model("gru")
    parts = seq2seq.step_models(model)
    vocabulary = len(VOCABULARY)
    source = np.stack([encode("12+7", 7), encode("5+5", 7)])
    candidates = np.array(list(itertools.product(range(vocabulary), repeat=3)), np.int32)
    for i in range(len(source)):
        decoder_input = np.concatenate([np.full((len(candidates), 1), seq2seq.START), candidates[:, :2]], axis=1)
        p = model.predict([np.repeat(source[i:i + 1], len(candidates), 0), decoder_input], verbose=0)
        log_p = np.log(np.take_along_axis(p, candidates[..., None], -1)[..., 0].astype(np.float64) + 1e-12)
        ended = np.cumsum(candidates == seq2seq.END, axis=1) - (candidates == seq2seq.END) > 0
        scores = np.where(ended, 0.0, log_p).sum(axis=1)
        beam = seq2seq.beam_decode(parts["encoder"], parts["decoder"], source[i:i + 1], 3, vocabulary ** 2)[0]
        ends = list(beam).index(seq2seq.END) + 1 if seq2seq.END in beam else 3
        tokens = beam[:ends]
        decoder_input = np.concatenate([[seq2seq.START], beam[:2]])[None].astype(np.int32)
        p = model.predict([source[i:i + 1], decoder_input], verbose=0)[0]
        beam_score = sum(np.log(p[t, token] + 1e-12) for t, token in enumerate(tokens))
        assert beam_score == pytest.approx(scores.max(), abs=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_language_model_reads_a_text_in_one_pass_as_its_step_model_does(cell):
    model = models.build("rnn_lm", (10,), Head(20, per_step=True),
                         {"cell": cell, "units": 12, "layers": 2, "embedding_dim": 6}, dtype="int32")
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    text = rng.integers(0, 20, 30).astype(np.int32)
    read = seq2seq.read(model, text)
    # the first window from a zero state is what the training model computes
    np.testing.assert_allclose(read[:10], model.predict(text[None, :10], verbose=0)[0], atol=1e-5)
    decoder = seq2seq.step_models(model)["decoder"]
    states = seq2seq.zero_states(decoder, 1)
    for t, token in enumerate(text):
        probabilities, *states = [np.asarray(o) for o in decoder([np.array([[token]], np.int32), *states])]
        np.testing.assert_allclose(probabilities[0], read[t], atol=1e-5)
    # and the state carries on: the second window read on its own differs
    assert not np.allclose(read[10:20], model.predict(text[None, 10:20], verbose=0)[0], atol=1e-3)


def test_reversing_the_source_changes_what_the_encoder_reads():
    forward, backward = _model("lstm"), _model("lstm", reverse_source=True)
    backward.set_weights(forward.get_weights())
    source = np.stack([encode("12+7", 7)])
    decoder_input = np.array([[seq2seq.START, 4, 5, 0, 0]], np.int32)
    flipped = np.stack([encode("7+21", 7)])
    np.testing.assert_allclose(backward.predict([source, decoder_input], verbose=0),
                               forward.predict([flipped, decoder_input], verbose=0), atol=1e-6)
    assert not np.allclose(forward.predict([source, decoder_input], verbose=0),
                           forward.predict([flipped, decoder_input], verbose=0), atol=1e-3)


def test_step_models_convert_to_builtin_tflite_ops():
    for part in seq2seq.step_models(_model("lstm", reverse_source=True), batch_size=1).values():
        converter = tf.lite.TFLiteConverter.from_keras_model(part)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        assert len(converter.convert()) > 0


def test_fortunes_split_by_text_and_windows_shift_by_one(tmp_path):
    import tensorflow_datasets as tfds

    from pipelines.datasets.shared import CHARACTERS
    from pipelines.datasets.text import ArchlabFortunes, held_out, read_fortunes

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
        examples = list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
        assert [e["position"] for e in examples] == sorted(e["position"] for e in examples)   # text order
        got = "".join(CHARACTERS[i] for e in examples for i in e["window"])
        expected = "\n".join(f for f in fortunes if held_out(f) == keep) + "\n"
        assert len(got) == len(examples) * ArchlabFortunes.WINDOW and got == expected[:len(got)]
        assert len(expected) - len(got) <= ArchlabFortunes.WINDOW
        for e in examples:
            np.testing.assert_array_equal(e["window"][1:], e["target"][:-1])
    repeated = cookies[250:300]   # in both files, so held out or kept together
    assert any(held_out(c) for c in cookies) and not all(held_out(c) for c in cookies)
    assert all(fortunes.count(c) == 2 for c in repeated)


# --- both token tasks through the stages and the edge runner ------------------------------

TOKEN_EXPERIMENTS = {
    "add_lstm": {"architecture": "seq2seq", "dataset": "addition", "seed": 2,
                 "hyperparameters": {"units": 32, "reverse_source": True},
                 "training": {"epochs": 6, "batch_size": 32, "learning_rate": 0.01, "clipnorm": 1.0},
                 "evaluation": {"beam_width": 2},
                 "export": {"variants": ["float32", "float16"], "latency_runs": 3, "parity_examples": 60}},
    "lm_gru": {"architecture": "rnn_lm", "dataset": "fortunes", "seed": 2,
               "hyperparameters": {"cell": "gru", "units": 24, "embedding_dim": 8},
               "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "clipnorm": 1.0},
               "evaluation": {"temperatures": [0.5, 1.0], "samples": 3, "sample_length": 300},
               "export": {"variants": ["float32", "dynamic_range"], "latency_runs": 3, "parity_examples": 4}},
}


def _write_fortunes(folder, n=300):
    folder.mkdir(parents=True)
    cookies = [f"Fortune {i}: a stitch in time saves {i % 9}.\n\t\t-- Anon" for i in range(n)]
    (folder / "fortunes").write_text("\n%\n".join(cookies) + "\n%\n")


@pytest.fixture
def token_params(workspace, monkeypatch, tmp_path):
    from pipelines import config, datasets, paths

    monkeypatch.setattr(ArchlabAddition, "SPLITS", {"train": 3000, "test": 300})
    raw = tmp_path / "raw"
    _write_fortunes(raw / "fortunes")
    datasets.prepare("addition", data_dir=paths.tfds_dir("addition"))
    datasets.prepare("fortunes", data_dir=paths.tfds_dir("fortunes"), raw_dir=raw)
    from tests.conftest import tiny_params
    return config.validate(tiny_params(("addition", "fortunes"), **TOKEN_EXPERIMENTS))


def test_seq2seq_trains_evaluates_and_exports_step_models_the_edge_runner_decodes(token_params, capsys):
    import json

    from edge import runner
    from pipelines import evaluate, export, paths, train

    train.train("add_lstm", token_params)
    metrics = evaluate.evaluate("add_lstm", token_params)
    assert 0 <= metrics["test_exact_match"] <= metrics["test_char_accuracy"] <= 1
    assert 0 <= metrics["test_exact_match_beam"] <= 1 and metrics["beam_width"] == 2
    assert metrics["test_char_accuracy"] > 0.2   # two epochs learn the leading digits at least
    table = (paths.eval_dir("add_lstm") / "predictions.csv").read_text().splitlines()
    assert table[0] == "question,answer,predicted,correct" and len(table) == 301
    assert (paths.eval_dir("add_lstm") / "plots" / "exact_match_by_length.png").exists()

    exported = export.export("add_lstm", token_params)
    assert exported["tflite_float32_max_abs_diff"] <= 1e-4
    assert exported["tflite_float32_greedy_agreement"] == 1.0
    assert exported["keras_exact_match"] == pytest.approx(
        np.mean([row.endswith(",True") for row in table[1:61]]))
    folder = paths.export_dir("add_lstm") / "tflite"
    assert sorted(f.name for f in folder.iterdir()) == [
        "float16_decoder.tflite", "float16_encoder.tflite", "float32_decoder.tflite",
        "float32_encoder.tflite", "generation.json"]
    spec = json.loads((folder / "generation.json").read_text())
    assert spec["vocabulary"] == VOCABULARY and spec["source_length"] == 7

    questions = [row.split(",")[0] for row in table[1:11]]
    keras_answers = [row.split(",")[2] for row in table[1:11]]
    capsys.readouterr()
    assert runner.main(["generate", str(folder), *questions]) == 0
    assert capsys.readouterr().out.splitlines() == keras_answers
    assert runner.main(["generate", str(folder), "12*3"]) == 1
    assert "outside the vocabulary" in capsys.readouterr().err


def test_language_model_reports_bpc_against_unigram_and_writes_samples(token_params, capsys):
    import mlflow

    from edge import runner
    from pipelines import evaluate, export, paths, train

    train.train("lm_gru", token_params)
    metrics = evaluate.evaluate("lm_gru", token_params)
    assert metrics["test_bpc"] < metrics["baseline_bpc"] < np.log2(len(token_params.experiments) and 98)
    samples = (paths.eval_dir("lm_gru") / "plots" / "samples.txt").read_text()
    assert samples.count("=== temperature 0.5") == 3 and samples.count("=== temperature 1.0") == 3
    assert (paths.eval_dir("lm_gru") / "plots" / "bpc_along_text.png").exists()
    run_id = json.loads((paths.train_dir("lm_gru") / "run.json").read_text())["run_id"]
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "text")]
    assert logged == ["text/samples.txt"]

    exported = export.export("lm_gru", token_params)
    assert exported["tflite_float32_max_abs_diff"] <= 1e-4
    assert abs(exported["tflite_float32_bpc_delta"]) < 1e-3
    folder = paths.export_dir("lm_gru") / "tflite"
    assert sorted(f.name for f in folder.iterdir()) == [
        "dynamic_range_decoder.tflite", "float32_decoder.tflite", "generation.json"]
    capsys.readouterr()
    assert runner.main(["generate", str(folder), "--max-length", "40", "Fortune"]) == 0
    out = capsys.readouterr().out
    assert out == _keras_greedy_continuation(paths.train_dir("lm_gru") / "model.keras", "Fortune", 40) + "\n"


def _keras_greedy_continuation(path, prime: str, length: int) -> str:
    """The Keras model's own greedy continuation of a newline and `prime`: the most probable
    character at each step, read back in."""
    import keras

    from models import seq2seq
    from pipelines.datasets.shared import CHARACTERS

    decoder = seq2seq.step_models(keras.models.load_model(path))["decoder"]
    states = seq2seq.zero_states(decoder, 1)
    out = []
    for token in [CHARACTERS.index("\n"), *(CHARACTERS.index(c) for c in prime)]:
        probabilities, *states = decoder.predict([np.array([[token]], np.int32), *states], verbose=0)
    for _ in range(length):
        out.append(int(np.argmax(probabilities[0])))
        probabilities, *states = decoder.predict([np.array([[out[-1]]], np.int32), *states], verbose=0)
    return "".join(CHARACTERS[t] for t in out)


def test_step_architectures_refuse_int8_in_params():
    from pipelines import config
    from tests.conftest import tiny_params

    bad = {**TOKEN_EXPERIMENTS["add_lstm"], "export": {"variants": ["float32", "int8"]}}
    with pytest.raises(config.ParamsError, match="add_lstm.export.variants: 'seq2seq' exports step models"):
        config.validate(tiny_params(("addition",), add_lstm=bad))


def test_report_lists_both_token_tasks_with_their_columns(token_params):
    from pipelines import config, evaluate, export, paths, report, train

    doc = token_params.model_dump()
    doc["experiments"] = {name: doc["experiments"][name] for name in TOKEN_EXPERIMENTS}
    for name in TOKEN_EXPERIMENTS:
        doc["experiments"][name]["training"]["epochs"] = 1
    params = config.validate(doc)
    for name in TOKEN_EXPERIMENTS:
        train.train(name, params)
        evaluate.evaluate(name, params)
        export.export(name, params)
    frame = report.report(params)
    assert set(frame["metric"]) == {"test_exact_match", "test_bpc"}
    text = (paths.REPORT / "leaderboard.md").read_text()
    assert "## sequence_to_sequence/addition" in text and "## language_modelling/fortunes" in text
    assert "char accuracy" in text and "exact match (beam)" in text and "baseline_bpc" in text
    sizes = frame.set_index("experiment")["float32_size_kb"]
    files = paths.export_dir("add_lstm") / "tflite"
    assert sizes["add_lstm"] * 1024 == sum(f.stat().st_size for f in files.glob("float32_*.tflite"))
