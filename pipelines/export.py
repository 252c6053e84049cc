"""DVC stage `export@<experiment>`: TFLite files checked against the Keras model.

    python -m pipelines.export <experiment>

The trained model is rebuilt from its registered builder with a fixed batch of 1
(recurrent layers then convert to builtin TFLite ops) and its weights copied, then
converted to each variant:

    float32        plain conversion, the parity reference
    dynamic_range  int8 weights, float activations
    float16        float16 weights
    int8           full-integer: int8 weights, activations, inputs and outputs,
                   calibrated on examples of the training split; recurrent models are
                   converted unrolled (TFLite's calibrator crashes on their loop ops)

A generative architecture (seq2seq, language model) exports its step models instead: the
encoder and the one-step decoder as `<variant>_encoder.tflite` / `<variant>_decoder.tflite`
and `generation.json` (vocabulary, start and end tokens), what the edge runner's greedy
generation loop reads; parity is then the decoder stepped over the test tokens against the
Keras model, and for seq2seq `tflite_<variant>_greedy_agreement`, the share of test
questions whose greedy answer equals Keras's (the float32 files must agree on every one).

Every variant is run with the LiteRT interpreter through the edge runner
(`edge/runner.py`, what a device runs) on the test split. Recorded per variant:
`tflite_<variant>_size_bytes`, `tflite_<variant>_latency_ms` (median single-sample; `keras_latency_ms` for the Keras
model as a compiled graph),
`tflite_<variant>_max_abs_diff` (against the Keras outputs) and
`tflite_<variant>_<metric>_delta` (headline metric change) in `export/metrics.json`;
the latencies, which differ per machine, in `export/timings.json` (outside DVC).
The stage fails, writing nothing, if any variant contains a Flex (select TF) op or the float32 file differs
from Keras by more than `export.float32_tolerance` (1e-4).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import statistics
import time

import keras
import mlflow
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import models
from edge.runner import Generator, StepModel, TFLiteModel
from pipelines import config, paths, runtime, stage, tasks
from pipelines.runtime import StageError

log = logging.getLogger("archlab.export")
WARMUP_RUNS = 10


def fixed_batch_copy(model: keras.Model, exp: config.Experiment, head: models.registry.Head,
                     unroll: bool = False) -> keras.Model:
    """The same architecture and weights with the input's batch fixed to 1; `unroll`
    also unrolls the time loop of architectures that have one (an `unroll` setting)."""
    hyperparameters = config.hyperparameters(exp)
    if unroll and "unroll" in type(hyperparameters).model_fields:
        hyperparameters = hyperparameters.model_copy(update={"unroll": True})
    copy = models.build(exp.architecture, model.input_shape[1:], head, hyperparameters, batch_size=1)
    copy.set_weights(model.get_weights())
    return copy


def convert(model: keras.Model, variant: str, representative: np.ndarray | None = None) -> bytes:
    """Convert with builtin ops only; a model that needs Flex ops fails here."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative is None:
            raise ValueError("int8 conversion needs representative examples")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif variant != "float32":
        raise ValueError(f"unknown TFLite variant {variant!r}; known: {', '.join(config.VARIANTS)}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel
            return converter.convert()
    except Exception as e:  # the converter raises several unrelated types
        text = str(e)
        needs = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
        if needs:
            raise StageError(f"TFLite {variant} conversion needs non-builtin (Flex) ops "
                             f"{', '.join(needs)}; the plain LiteRT interpreter cannot run them") from e
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise StageError(f"TFLite {variant} conversion failed: {first}") from e


def flex_ops(model: TFLiteModel) -> list[str]:
    return [op for op in model.op_names() if op.startswith("Flex") or op == "CUSTOM"]


def median_latency_ms(predict_one, x: np.ndarray, runs: int) -> float:
    for _ in range(WARMUP_RUNS):
        predict_one(x)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        predict_one(x)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def keras_predict_one(model: keras.Model):
    """Single-sample Keras inference as a compiled TensorFlow graph (traced on first call;
    eager calls would time Python running the recurrent loop step by step)."""
    graph = models.registry.inference_graph(model)
    return lambda x: graph(x[None])


def check_parity(variant: str, max_abs_diff: float, tolerance: float) -> None:
    """The float32 gate: the exported file must compute what the Keras model computes."""
    if variant == "float32" and not max_abs_diff <= tolerance:
        raise StageError(f"float32 TFLite outputs differ from Keras by {max_abs_diff:.3g} "
                         f"> export.float32_tolerance {tolerance:g}")


class SingleModel:
    """What most architectures export: one model, input -> output, batch fixed to 1."""

    def __init__(self, model: keras.Model, exp: config.Experiment, task: tasks.Task, splits, variants):
        self.edge = fixed_batch_copy(model, exp, task.head(splits))
        # int8 calibration crashes on TFLite's recurrent loop ops: int8 files are unrolled
        self.int8 = fixed_batch_copy(model, exp, task.head(splits), unroll=True) if "int8" in variants else None

    def keras_latency_ms(self, x: np.ndarray, runs: int) -> float:
        return median_latency_ms(keras_predict_one(self.edge), x[0], runs)

    def write(self, variant: str, folder, representative) -> list:
        path = folder / f"{variant}.tflite"
        path.write_bytes(convert(self.int8 if variant == "int8" else self.edge, variant, representative))
        return [path]

    def run(self, files, x: np.ndarray, reference: np.ndarray, task, desc: str):
        """(outputs, max abs diff against `reference`)."""
        tflite = TFLiteModel(files[0])
        _check_builtin(tflite, files[0])
        outputs = np.stack([tflite.predict_one(s) for s in tqdm(x, desc=desc, unit="ex", leave=False)])
        return outputs, float(np.max(np.abs(outputs - reference)))

    @staticmethod
    def files(folder, variant: str) -> list:
        return [folder / f"{variant}.tflite"]

    @staticmethod
    def one_step(files, x):
        """What the latency times: one sample through the file."""
        tflite = TFLiteModel(files[0])
        return lambda: tflite.predict_one(x[0])


class StepModels:
    """A generative architecture's step models (`registry.register(..., steps=...)`): the
    encoder (seq2seq) and the one-step decoder, each a file `<variant>_<part>.tflite`.
    Parity compares the decoder stepped over the test tokens (teacher forcing) with the
    Keras model; the task's outputs come from `task.edge_predict` (greedy decoding for
    seq2seq). Latency is one decoder step."""

    def __init__(self, model: keras.Model, exp: config.Experiment, task: tasks.Task, splits, variants):
        if "int8" in variants:
            raise StageError(f"{exp.architecture} exports step models: int8 is not available "
                             "(export.variants: float32, dynamic_range, float16)")
        self.parts = models.get(exp.architecture).steps(model, batch_size=1)

    def keras_latency_ms(self, x, runs: int) -> float:
        decoder = self.parts["decoder"]
        graph = models.registry.inference_graph(decoder)
        inputs = [np.ones((1, 1), np.int32)] + [np.zeros(i.shape, np.float32) for i in decoder.inputs[1:]]
        return median_latency_ms(lambda _: graph(inputs), None, runs)

    def write(self, variant: str, folder, representative) -> list:
        paths_ = []
        for part, keras_model in self.parts.items():
            path = folder / f"{variant}_{part}.tflite"
            path.write_bytes(convert(keras_model, variant))
            paths_.append(path)
        return paths_

    def run(self, files, x, reference: np.ndarray, task, desc: str):
        generator = self._generator(files)
        by_part = {f.stem.rsplit("_", 1)[1]: f for f in files}
        for name, part in (("decoder", generator.decoder), ("encoder", generator.encoder)):
            if part is not None:
                _check_builtin(part, by_part[name])   # the error names the file at fault
        sources, tokens = x if isinstance(x, tuple) else (None, x)
        if task.stream:   # consecutive pieces of one text, read as one
            forced = generator.teacher_forced(None, tokens.reshape(-1)).reshape(tokens.shape + (-1,))
        else:
            forced = np.stack([generator.teacher_forced(None if sources is None else sources[i], tokens[i])
                               for i in tqdm(range(len(tokens)), desc=desc, unit="ex", leave=False)])
        return task.edge_predict(generator, x, forced), float(np.max(np.abs(forced - reference)))

    @staticmethod
    def _generator(files) -> Generator:
        by_part = {f.stem.rsplit("_", 1)[1]: f for f in files}
        return Generator(by_part["decoder"], by_part.get("encoder"))

    @staticmethod
    def files(folder, variant: str) -> list:
        return sorted(folder.glob(f"{variant}_*coder.tflite"))

    @classmethod
    def one_step(cls, files, x):
        """What the latency times: one decoder step."""
        generator = cls._generator(files)
        sources, tokens = x if isinstance(x, tuple) else (None, x)
        states = generator.start(None if sources is None else sources[0])
        return lambda: generator.step(int(tokens[0][0]), states)


class Halves:
    """An autoencoder's encoder and decoder, each a file `<variant>_<half>.tflite` (the
    decoder alone is the VAE's generator from a latent vector). Parity: the encoder on the
    test images, the decoder on Keras's codes (the VAE's mean), each against Keras; the
    outputs scored are the decoder's file on the encoder's file's codes. Latency is one
    image encoded and decoded."""

    def __init__(self, model: keras.Model, exp: config.Experiment, task: tasks.Task, splits, variants):
        if "int8" in variants:
            raise StageError(f"{exp.architecture}: int8 is not exported for autoencoder halves "
                             "(export.variants: float32, dynamic_range, float16)")
        self.parts = {name: _fixed_batch(model.get_layer(name)) for name in ("encoder", "decoder")}

    def keras_latency_ms(self, x, runs: int) -> float:
        encode, decode = (models.registry.inference_graph(m) for m in self.parts.values())
        return median_latency_ms(lambda image: decode(_first(encode(image[None]))), x[0], runs)

    def write(self, variant: str, folder, representative) -> list:
        files = []
        for name, part in self.parts.items():
            files.append(folder / f"{variant}_{name}.tflite")
            files[-1].write_bytes(convert(part, variant))
        return files

    @staticmethod
    def files(folder, variant: str) -> list:
        return [folder / f"{variant}_encoder.tflite", folder / f"{variant}_decoder.tflite"]

    def run(self, files, x, reference, task, desc: str):
        encoder, decoder = (StepModel(f) for f in files)
        for part, path in zip((encoder, decoder), files):
            _check_builtin(part, path)
        keras_codes = _first(self.parts["encoder"].predict(x, batch_size=256, verbose=0))
        keras_images = self.parts["decoder"].predict(keras_codes, batch_size=256, verbose=0)
        diff, outputs = 0.0, []
        for image, keras_code, keras_image in zip(tqdm(x, desc=desc, unit="ex", leave=False), keras_codes,
                                                  keras_images):
            codes = encoder(image=image[None])
            diff = max(diff, float(np.max(np.abs(codes[0][0] - keras_code))))
            from_keras_code = decoder(code=keras_code[None])[0]
            diff = max(diff, float(np.max(np.abs(from_keras_code[0] - keras_image))))
            outputs.append(decoder(code=codes[0])[0][0])
        return np.stack(outputs), diff

    @staticmethod
    def one_step(files, x):
        encoder, decoder = (StepModel(f) for f in files)
        return lambda: decoder(code=encoder(image=x[:1])[0])


def _fixed_batch(part: keras.Model) -> keras.Model:
    inputs = keras.Input(part.input_shape[1:], batch_size=1, name=part.inputs[0].name)
    return keras.Model(inputs, part(inputs), name=part.name)


def _first(outputs):
    """The code: the first output (a VAE's encoder also gives the log variance)."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def edge_export(model: keras.Model, exp: config.Experiment, task: tasks.Task, splits) -> SingleModel | StepModels | Halves:
    """How an experiment's model goes to TFLite: step models for a generative architecture,
    the encoder and decoder of an autoencoder, else the one model."""
    kind = StepModels if task.tokens else Halves if task.name == "reconstruction" else SingleModel
    return kind(model, exp, task, splits, exp.export.variants)


def _check_builtin(model, path) -> None:
    flex = flex_ops(model)
    if flex:
        raise StageError(f"TFLite export {path.name} uses non-builtin ops {flex}; "
                         "the plain LiteRT interpreter cannot run it")


def export(name: str, params: config.Params) -> dict[str, float]:
    context = stage.open_experiment(name, params)
    exp, splits, task = context.experiment, context.splits, context.task
    settings = exp.export
    model = stage.trained_model(name)
    edge = edge_export(model, exp, task, splits)
    representative, _ = tasks.arrays(splits.train, task, limit=settings.representative_examples)
    x_test, y_test = tasks.arrays(splits.test, task, limit=settings.parity_examples)
    # what the files must compute: the model's outputs (teacher-forced for seq2seq; a
    # language model reads the windows as one text)
    reference = task.predict(model, x_test) if task.stream else model.predict(x_test, batch_size=256, verbose=0)
    expected = task.predict(model, x_test) if task.tokens and not task.stream else reference
    reference_score = task.score(expected, y_test)
    metrics: dict[str, float] = {f"keras_{task.headline}": reference_score,
                                 "parity_examples": int(len(y_test))}
    timings = {"keras_latency_ms": edge.keras_latency_ms(x_test, settings.latency_runs)}
    with runtime.atomic_dir(paths.export_dir(name)) as out:
        (out / "tflite").mkdir()
        for variant in settings.variants:
            files = edge.write(variant, out / "tflite", representative)
            outputs, diff = edge.run(files, x_test, reference, task, f"{name} {variant}")
            check_parity(variant, diff, settings.float32_tolerance)
            prefix = f"tflite_{variant}"
            if np.issubdtype(expected.dtype, np.integer):   # generated tokens (seq2seq)
                agreement = float(np.mean(np.all(outputs == expected, axis=1)))
                metrics[f"{prefix}_greedy_agreement"] = agreement
                if variant == "float32" and agreement < 1:
                    raise StageError(f"float32 TFLite greedy outputs differ from Keras's on "
                                     f"{np.sum(~np.all(outputs == expected, axis=1))} of {len(outputs)} examples")
            metrics[f"{prefix}_size_bytes"] = sum(f.stat().st_size for f in files)
            timings[f"{prefix}_latency_ms"] = median_latency_ms(lambda _, step=edge.one_step(files, x_test): step(),
                                                                None, settings.latency_runs)
            metrics[f"{prefix}_max_abs_diff"] = diff
            metrics[f"{prefix}_{task.headline}_delta"] = task.score(outputs, y_test) - reference_score
            log.info("%s %s: %d bytes, %.3f ms, max |diff| %.2e, %s delta %+.4f", name, variant,
                     metrics[f"{prefix}_size_bytes"], timings[f"{prefix}_latency_ms"], diff,
                     task.headline, metrics[f"{prefix}_{task.headline}_delta"])
        if splits.class_names:
            (out / "tflite" / "labels.txt").write_text("\n".join(splits.class_names) + "\n")
        if task.tokens:
            runtime.write_json(out / "tflite" / "generation.json",
                               tasks.generation_spec(task, splits.vocabulary, x_test))
        runtime.write_json(out / "metrics.json", metrics)
        runtime.write_json(out / paths.TIMINGS, timings)
        with stage.mlflow_run(context, "export"):
            mlflow.log_metrics({**metrics, **timings})
            mlflow.log_artifacts(str(out / "tflite"), "tflite")
    return {**metrics, **timings}


if __name__ == "__main__":
    stage.cli(export, "Export one experiment of params.yaml to TFLite, checked against Keras.")
