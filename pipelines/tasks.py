"""Tasks: what a dataset asks of a model, shared by every architecture that does it.

A task fixes the input scaling, the model's output (softmax over classes, linear, or
one softmax per step), the loss, the Keras metrics, the headline test metric (the same
MLflow name for every architecture on the task), how outputs are scored, the baselines
that need no model, and the task's plots.

    image_classification     images -> class              test_accuracy
    sequence_classification  padded sequences -> class    test_accuracy
    forecasting              window -> next value         test_nrmse, baseline_nrmse (persistence),
                                                          free_run_nrmse_84 (outputs fed back)
    sequence_regression      sequence -> real value       test_mse, baseline_mse (best constant)
    sequence_tagging         sequence -> class per step   test_symbol_accuracy (non-blank steps)
    sequence_to_sequence     tokens -> tokens (seq2seq)   test_exact_match (greedy decoding),
                                                          test_char_accuracy
    language_modelling       text -> next character       test_bpc, baseline_bpc (unigram)
    reconstruction           image -> the same image      test_reconstruction_mse,
                             (autoencoders)               test_noisy_reconstruction_mse

The two token tasks train with teacher forcing (the decoder reads the true previous token)
and generate through step models (`models.seq2seq.step_models`): `predict` is how the
task's outputs come from a Keras model, `edge_predict` from the TFLite step models
(`edge.runner.Generator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import tensorflow as tf

from models import seq2seq
from models.registry import Head, inference_graph
from pipelines import plots

PREDICT_BATCH = 256


@dataclass(frozen=True)
class Task:
    name: str
    loss: str
    metrics: tuple[str, ...]
    headline: str               # logged as test_<headline>: accuracy, nrmse, mse, ...
    higher_is_better: bool
    preprocess: Callable        # (input, target) -> (model input, target), in tf.data
    head: Callable              # (Splits) -> Head: the model's output for this task
    score: Callable             # (outputs: np.ndarray, targets: np.ndarray) -> headline value
    plot: Callable              # (outputs, targets, names, out_dir, inputs) -> list of files
    table: Callable             # (outputs, targets, names, inputs) -> per-example DataFrame
    baselines: Callable = lambda inputs, targets: {}  # reference scores that need no model
    # Scores that need the model itself (free-running generation, sampling, beam search):
    # (model, Splits, test inputs, test targets, out_dir, hyperparameters) -> (metrics, files)
    generation: Callable = lambda model, splits, x, y, out_dir, hyperparameters: ({}, [])
    # Scores beside the headline: (outputs, targets) -> metrics
    details: Callable = lambda outputs, targets: {}
    # How outputs come from the model: (model, inputs) -> outputs (default: model.predict)
    predict: Callable = lambda model, x: model.predict(x, batch_size=PREDICT_BATCH, verbose=0)
    # Token tasks: int32 inputs; the model generates through step models, and
    # edge_predict(generator, inputs, teacher_forced) gives the outputs from TFLite ones
    tokens: bool = False
    edge_predict: Callable | None = None
    # The examples are consecutive pieces of one text, read as one (language modelling)
    stream: bool = False

    def input_shape(self, splits) -> tuple[int, ...]:
        return splits.input_shape

    @property
    def input_dtype(self) -> str:
        return "int32" if self.tokens else "float32"


def _scale_image(image, label):
    return tf.cast(image, tf.float32) / 255.0, label


def _as_float(sequence, target):
    return tf.cast(sequence, tf.float32), target


def _softmax(splits) -> Head:
    return Head(len(splits.class_names))


def _softmax_per_step(splits) -> Head:
    return Head(len(splits.class_names), per_step=True)


def _linear(splits) -> Head:
    return Head(1, activation="linear")


def _accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(outputs.argmax(axis=-1) == targets))


def _classification_plots(outputs, targets, class_names, out_dir: Path, inputs=None) -> list[Path]:
    path = out_dir / "confusion_matrix.png"
    plots.confusion_matrix(targets, outputs.argmax(axis=-1), class_names, path)
    return [path]


def _classification_table(outputs, targets, class_names, inputs=None) -> pd.DataFrame:
    names = np.asarray(class_names)
    return pd.DataFrame({"actual": names[targets], "predicted": names[outputs.argmax(axis=-1)]})


def _mse(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((outputs.reshape(targets.shape) - targets) ** 2))


def nrmse(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Root-mean-square error over the targets' standard deviation (1 = predicting the mean)."""
    return float(np.sqrt(_mse(outputs, targets)) / np.std(targets))


def _persistence(inputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Forecast the next point as the last one seen."""
    return {"baseline_nrmse": nrmse(inputs[:, -1, 0], targets)}


def _constant(inputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The best prediction without memory of the input: the targets' mean (adding: 1/6)."""
    return {"baseline_mse": _mse(np.full(targets.shape, targets.mean()), targets)}


def _regression_table(outputs, targets, class_names, inputs=None) -> pd.DataFrame:
    return pd.DataFrame({"actual": targets, "predicted": outputs.reshape(targets.shape)})


def _forecast_plots(outputs, targets, class_names, out_dir: Path, inputs=None) -> list[Path]:
    path = out_dir / "forecast.png"
    plots.forecast(targets, outputs.reshape(targets.shape), path)
    return [path]


FREE_RUN_STEPS = 100   # generated right after the training series
HORIZON = 84           # the classic free-running horizon (Jaeger & Haas 2004)
TRIAL_STRIDE = 20      # free-running trials start every 20 points of the test series


def free_run(model, windows: np.ndarray, steps: int) -> np.ndarray:
    """Feed a window -> next point model its own outputs: `steps` points after each window."""
    predict = inference_graph(model)
    x = tf.constant(windows, tf.float32)
    generated = []
    for _ in range(steps):
        following = tf.reshape(predict(x), (-1, 1, 1))
        generated.append(following[:, 0, 0])
        x = tf.concat([x[:, 1:], following], axis=1)
    return np.stack([g.numpy() for g in generated], axis=1)


def _free_running(model, splits, x, y, out_dir: Path, hyperparameters=None) -> tuple[dict[str, float], list[Path]]:
    """Free-running generation, each output fed back as the next input, from the series:
    `free_run_nrmse_84`, the error at step 84 over trials started every 20 test points
    (sqrt of the mean squared error over trials / std of the test series); and
    `free_run_100_nrmse` over the 100 points right after the training series, drawn."""
    train, test = splits.series("train"), splits.series("test")
    width = model.input_shape[1]
    after_training = free_run(model, train[None, -width:, None], FREE_RUN_STEPS)[0]
    starts = np.arange(0, len(test) - width - HORIZON + 1, TRIAL_STRIDE)
    windows = np.stack([test[s:s + width] for s in starts])[..., None]
    at_horizon = free_run(model, windows, HORIZON)[:, -1]
    truth = test[starts + width + HORIZON - 1]
    scale = np.std(test)
    metrics = {f"free_run_nrmse_{HORIZON}": float(np.sqrt(np.mean((at_horizon - truth) ** 2)) / scale),
               "free_run_trials": int(len(starts)),
               f"free_run_{FREE_RUN_STEPS}_nrmse": nrmse(after_training, test[:FREE_RUN_STEPS])}
    path = out_dir / "free_run.png"
    plots.free_run(test[:FREE_RUN_STEPS], after_training, HORIZON, path)
    return metrics, [path]


def _regression_plots(outputs, targets, class_names, out_dir: Path, inputs=None) -> list[Path]:
    path = out_dir / "predicted_vs_actual.png"
    plots.predicted_vs_actual(targets, outputs.reshape(targets.shape), path)
    return [path]


def _symbol_accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Accuracy at the steps whose target is a symbol (class 0, blank, is the filler)."""
    symbols = targets != 0
    return float(np.mean(outputs.argmax(axis=-1)[symbols] == targets[symbols]))


def _guess_symbol(inputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Always answering the most frequent symbol."""
    counts = np.bincount(targets[targets != 0])
    return {"baseline_symbol_accuracy": float(counts.max() / counts.sum())}


def _tagging_table(outputs, targets, class_names, inputs=None) -> pd.DataFrame:
    names = np.asarray(class_names)
    predicted = outputs.argmax(axis=-1)
    symbols = targets != 0
    return pd.DataFrame({"actual": [" ".join(names[t[m]]) for t, m in zip(targets, symbols)],
                         "predicted": [" ".join(names[p[m]]) for p, m in zip(predicted, symbols)]})


def _no_plots(outputs, targets, class_names, out_dir: Path, inputs=None) -> list[Path]:
    return []


# --- reconstruction: autoencoders ---------------------------------------------------------

def _autoencode(image, label):
    """An image as the model's input and its target alike, scaled to [0, 1]."""
    x = tf.cast(image, tf.float32) / 255.0
    return x, x


def _pixels_head(splits) -> Head:
    return Head(int(np.prod(splits.input_shape)), activation="sigmoid")


def _per_image_mse(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.mean((outputs.reshape(len(targets), -1) - targets.reshape(len(targets), -1)) ** 2, axis=1)


def _reconstruction_mse(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(_per_image_mse(outputs, targets)))


def _reconstruction_table(outputs, targets, class_names, inputs=None) -> pd.DataFrame:
    return pd.DataFrame({"reconstruction_mse": _per_image_mse(outputs, targets)})


def _reconstruction_plots(outputs, targets, class_names, out_dir: Path, inputs=None) -> list[Path]:
    path = out_dir / "reconstructions.png"
    plots.image_rows({"input": targets[:10], "reconstruction": outputs[:10]}, path)
    return [path]


NOISE, NOISE_LEVEL, NOISE_SEED = "gaussian", 0.3, 0   # the noisy test inputs every autoencoder is scored on


def _noisy_reconstruction(model, splits, x, y, out_dir: Path, hyperparameters=None):
    """Every autoencoder on the same corrupted test images (scored against the clean ones),
    so the denoising one can be compared; the grid input / noisy / output."""
    from models.autoencoder import corrupt

    noisy = np.asarray(corrupt(tf.constant(x), NOISE, NOISE_LEVEL, NOISE_SEED))
    outputs = model.predict(noisy, batch_size=PREDICT_BATCH, verbose=0)
    path = out_dir / "denoising.png"
    plots.image_rows({"input": x[:10], f"{NOISE} noise {NOISE_LEVEL}": noisy[:10], "reconstruction": outputs[:10]},
                     path)
    metrics, files = {"test_noisy_reconstruction_mse": _reconstruction_mse(outputs, x)}, [path]
    encoder = model.get_layer("encoder")
    codes = encoder.predict(x, batch_size=PREDICT_BATCH, verbose=0)
    codes = codes[0] if isinstance(codes, list) else codes   # a VAE's mean
    _, labels = arrays(splits.test, TASKS["image_classification"])
    files.append(out_dir / "latent_map.png")
    plots.latent_map(codes, labels, splits.class_names, files[-1])
    metrics.update(_features_for_a_classifier(encoder, splits, codes, x, labels))
    if hasattr(model, "negative_elbo"):   # the VAE: its ELBO, and samples from the prior
        metrics["test_elbo"] = -float(model.evaluate(x, batch_size=PREDICT_BATCH, verbose=0, return_dict=True)["loss"])
        z = np.random.default_rng(SAMPLE_SEED).normal(size=(30, codes.shape[-1])).astype(np.float32)
        files.append(out_dir / "vae_samples.png")
        samples = model.get_layer("decoder").predict(z, verbose=0)
        plots.image_rows({"samples from N(0, I)": samples[:10], "": samples[10:20], " ": samples[20:30]}, files[-1])
    return metrics, files


FEATURE_EXAMPLES = 10_000   # training images for the classifier on codes / on pixels


def _features_for_a_classifier(encoder, splits, test_codes, test_images, test_labels) -> dict[str, float]:
    """The same classifier (standardised logistic regression) on the encoder's codes and on
    the raw pixels, trained on the first FEATURE_EXAMPLES training images: test accuracy of
    each."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images, labels = arrays(splits.train, TASKS["image_classification"], limit=FEATURE_EXAMPLES)
    codes = encoder.predict(images, batch_size=PREDICT_BATCH, verbose=0)
    codes = codes[0] if isinstance(codes, list) else codes
    scores = {}
    for name, train_x, test_x in (("code", codes, test_codes), ("pixel", images, test_images)):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
        classifier.fit(train_x.reshape(len(train_x), -1), labels)
        scores[f"{name}_classifier_accuracy"] = float(classifier.score(test_x.reshape(len(test_x), -1), test_labels))
    return scores


# --- token tasks: seq2seq and language modelling ---------------------------------------

def _vocabulary_head(splits) -> Head:
    return Head(len(splits.vocabulary), per_step=True)


def _teacher_forcing(question, answer):
    """(question, answer) -> ((question, decoder input: START then the answer but its last
    token), answer): the decoder reads the true previous token while training."""
    answer = tf.cast(answer, tf.int32)
    decoder_input = tf.concat([tf.constant([seq2seq.START], tf.int32), answer[:-1]], axis=0)
    return (tf.cast(question, tf.int32), decoder_input), answer


def _as_tokens(window, target):
    return tf.cast(window, tf.int32), tf.cast(target, tf.int32)


def _greedy(model, x) -> np.ndarray:
    """Greedy decoding with the model's step models: the answer tokens (N, answer length),
    END included, PAD after it."""
    parts = seq2seq.step_models(model)
    return seq2seq.greedy_decode(parts["encoder"], parts["decoder"], x[0], max_length=x[1].shape[1])


def _beam(model, splits, x, y, out_dir: Path, hyperparameters=None) -> tuple[dict[str, float], list[Path]]:
    """With `beam_width` > 1, the test questions decoded by beam search too."""
    width = getattr(hyperparameters, "beam_width", 1)
    if width <= 1:
        return {}, []
    parts = seq2seq.step_models(model)
    beam = seq2seq.beam_decode(parts["encoder"], parts["decoder"], x[0], x[1].shape[1], width)
    return {"test_exact_match_beam": _exact_match(beam, y), "beam_width": width}, []


def _edge_greedy(generator, x, teacher_forced) -> np.ndarray:
    source, decoder_input = x
    out = np.full(decoder_input.shape, seq2seq.PAD, np.int32)
    for i, s in enumerate(source):
        tokens = generator.greedy(s, [seq2seq.START], decoder_input.shape[1], seq2seq.END)
        out[i, :len(tokens)] = tokens
    return out


def _exact_match(outputs: np.ndarray, targets: np.ndarray) -> float:
    """The share of answers right in every token (END included)."""
    return float(np.mean(np.all(outputs == targets, axis=1)))


def _char_accuracy(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Per-character accuracy: the answer's characters (not END, not padding) predicted
    right at their position."""
    chars = targets > seq2seq.END
    return {"test_char_accuracy": float(np.mean(outputs[chars] == targets[chars]))}


def _text(ids, vocabulary) -> str:
    return "".join(vocabulary[i] for i in ids if i > seq2seq.END)


def _seq2seq_table(outputs, targets, vocabulary, inputs=None) -> pd.DataFrame:
    return pd.DataFrame({"question": [_text(q, vocabulary) for q in inputs[0]],
                         "answer": [_text(t, vocabulary) for t in targets],
                         "predicted": [_text(o, vocabulary) for o in outputs],
                         "correct": np.all(outputs == targets, axis=1)})


def _seq2seq_plots(outputs, targets, vocabulary, out_dir: Path, inputs=None) -> list[Path]:
    path = out_dir / "exact_match_by_length.png"
    plots.exact_match_by_length((inputs[0] != seq2seq.PAD).sum(axis=1), np.all(outputs == targets, axis=1), path)
    return [path]


def _target_bits(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log2 of the probability given to each target character."""
    p = np.take_along_axis(outputs, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return -np.log2(np.maximum(p.astype(np.float64), 1e-12))


def bits_per_character(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(_target_bits(outputs, targets)))


def _unigram(inputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The entropy of the test text's own character frequencies: the fewest bits per
    character any unigram model (one that ignores context) can score on it."""
    counts = np.bincount(targets.ravel())
    p = counts[counts > 0] / counts.sum()
    return {"baseline_bpc": float(-np.sum(p * np.log2(p)))}


def _read_text(model, x) -> np.ndarray:
    """The windows of a split are consecutive pieces of its text: the language model reads
    them as one text, its state carried from each window into the next (not reset to zero
    at every window); the probabilities per window, (N, window, V)."""
    return seq2seq.read(model, x.reshape(-1)).reshape(x.shape + (-1,))


def _edge_read_text(generator, x, teacher_forced) -> np.ndarray:
    return teacher_forced


def _lm_table(outputs, targets, vocabulary, inputs=None) -> pd.DataFrame:
    return pd.DataFrame({"bpc": _target_bits(outputs, targets).mean(axis=1),
                         "text": ["".join(vocabulary[i] for i in w) for w in inputs]})


def _lm_plots(outputs, targets, vocabulary, out_dir: Path, inputs=None) -> list[Path]:
    path = out_dir / "bpc_along_text.png"
    plots.bpc_along_text(_target_bits(outputs, targets).mean(axis=1), _unigram(inputs, targets)["baseline_bpc"],
                         path)
    return [path]


SAMPLE_TEMPERATURES = (0.5, 1.0)
SAMPLES, SAMPLE_LENGTH, SAMPLE_SEED = 3, 300, 0


def _samples(model, splits, x, y, out_dir: Path, hyperparameters=None) -> tuple[dict[str, float], list[Path]]:
    """Text drawn from the language model at two temperatures, each sample started after a
    newline (a fortune's start), written to `samples.txt`."""
    vocabulary = splits.vocabulary
    decoder = seq2seq.step_models(model)["decoder"]
    rng = np.random.default_rng(SAMPLE_SEED)
    prime = np.full((SAMPLES, 1), vocabulary.index("\n"), np.int32)
    lines = []
    for temperature in SAMPLE_TEMPERATURES:
        drawn = seq2seq.sample(decoder, prime, SAMPLE_LENGTH, temperature, rng)
        for i, ids in enumerate(drawn):
            lines += [f"=== temperature {temperature}, sample {i + 1} ===",
                      "".join(vocabulary[t] for t in ids), ""]
    path = out_dir / "samples.txt"
    path.write_text("\n".join(lines))
    return {}, [path]


_CLASSIFICATION = dict(loss="sparse_categorical_crossentropy", metrics=("accuracy",),
                       headline="accuracy", higher_is_better=True, head=_softmax,
                       score=_accuracy, plot=_classification_plots, table=_classification_table)

TASKS = {
    "image_classification": Task(name="image_classification", preprocess=_scale_image, **_CLASSIFICATION),
    "sequence_classification": Task(name="sequence_classification", preprocess=_as_float,
                                    **_CLASSIFICATION),
    "forecasting": Task(name="forecasting", loss="mse", metrics=("mae",), headline="nrmse",
                        higher_is_better=False, preprocess=_as_float, head=_linear, score=nrmse,
                        plot=_forecast_plots, table=_regression_table, baselines=_persistence,
                        generation=_free_running),
    "sequence_regression": Task(name="sequence_regression", loss="mse", metrics=("mae",),
                                headline="mse", higher_is_better=False, preprocess=_as_float,
                                head=_linear, score=_mse, plot=_regression_plots,
                                table=_regression_table, baselines=_constant),
    "sequence_tagging": Task(name="sequence_tagging", loss="sparse_categorical_crossentropy",
                             metrics=("accuracy",), headline="symbol_accuracy",
                             higher_is_better=True, preprocess=_as_float, head=_softmax_per_step,
                             score=_symbol_accuracy, plot=_no_plots, table=_tagging_table,
                             baselines=_guess_symbol),
    "reconstruction": Task(name="reconstruction", loss="mse", metrics=(), headline="reconstruction_mse",
                           higher_is_better=False, preprocess=_autoencode, head=_pixels_head,
                           score=_reconstruction_mse, plot=_reconstruction_plots, table=_reconstruction_table,
                           generation=_noisy_reconstruction),
    "sequence_to_sequence": Task(name="sequence_to_sequence", loss="sparse_categorical_crossentropy",
                                 metrics=(), headline="exact_match", higher_is_better=True,
                                 preprocess=_teacher_forcing, head=_vocabulary_head, score=_exact_match,
                                 plot=_seq2seq_plots, table=_seq2seq_table, details=_char_accuracy,
                                 generation=_beam, predict=_greedy, tokens=True, edge_predict=_edge_greedy),
    "language_modelling": Task(name="language_modelling", loss="sparse_categorical_crossentropy",
                               metrics=(), headline="bpc", higher_is_better=False, preprocess=_as_tokens,
                               head=_vocabulary_head, score=bits_per_character, plot=_lm_plots,
                               table=_lm_table, baselines=_unigram, generation=_samples, predict=_read_text,
                               tokens=True, stream=True, edge_predict=_edge_read_text),
}


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None


def batches(ds: tf.data.Dataset, task: Task, batch_size: int, *, shuffle_buffer: int = 0,
            seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """The tf.data pipeline: preprocess, cache, (shuffle), (repeat), batch, prefetch."""
    ds = ds.map(task.preprocess, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def arrays(ds: tf.data.Dataset, task: Task, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A split as preprocessed NumPy arrays (inputs, targets), optionally the first `limit`;
    inputs are a tuple of arrays for a model of several inputs (seq2seq)."""
    ds = ds.map(task.preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    if limit is not None:
        ds = ds.take(limit)
    xs, ys = [], []
    for x, y in ds.batch(1024).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("the split is empty")
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *xs), np.concatenate(ys)


LM_GENERATE = 200   # characters the edge runner's language model writes by default


def generation_spec(task: Task, vocabulary: list[str], x) -> dict:
    """`generation.json` beside a generative model's step models: what the edge runner
    needs to turn text into tokens and back, and to start and stop decoding."""
    spec = {"task": task.name, "vocabulary": vocabulary}
    if task.name == "sequence_to_sequence":
        return {**spec, "start": seq2seq.START, "end": seq2seq.END,
                "source_length": int(x[0].shape[1]), "max_length": int(x[1].shape[1])}
    unknown = vocabulary.index("<unk>") if "<unk>" in vocabulary else None
    return {**spec, "start": vocabulary.index("\n"), "end": None, "unknown": unknown,
            "max_length": LM_GENERATE}
