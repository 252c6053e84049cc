"""Run an archlab TFLite model on a device: needs only `ai_edge_litert` and `numpy`.

    python runner.py model.tflite inputs.npy [--labels labels.txt] [--output preds.npy]
    python runner.py generate <tflite folder> [--variant float32] [TEXT ...]
    python runner.py reconstruct <tflite folder> images.npy [--variant float32] [--output out.npy]
    python runner.py sample <tflite folder> N [--seed 0] [--variant float32] --output out.npy
    python runner.py tree model.tflite trees.npz [--labels labels.txt] [--output preds.npy]
    python runner.py forecast <tflite folder> series.npy|series.csv [--free-run N] [--variant float32]

`inputs.npy` holds float32 inputs shaped like the model's input without the batch
axis, or with it ((N, ...) for N samples). Inputs are scaled as in training
(images in [0, 1]; sequences standardised and zero-padded as the TFDS builders write
them); int8 models are quantised and dequantised here. Prints one line per input: the
predicted label (one per step for per-step models), or the predicted value of a
one-output model (forecasting, regression). This file is self-contained: copy it to
the device.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter


class TFLiteModel:
    """A TFLite model with a single input and output, run one sample at a time."""

    def __init__(self, path: str, num_threads: int = 1):
        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        (self.input,) = self.interpreter.get_input_details()
        (self.output,) = self.interpreter.get_output_details()
        self.sample_shape = tuple(self.input["shape"][1:])

    def op_names(self) -> list[str]:
        """Names of the operators in the graph (Flex ops show as `Flex...` / custom)."""
        return sorted({op["op_name"] for op in self.interpreter._get_ops_details()})

    def _quantise(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        scale, zero_point = self.input["quantization"]
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
        return x.astype(dtype)

    def _dequantise(self, y: np.ndarray) -> np.ndarray:
        scale, zero_point = self.output["quantization"]
        if np.issubdtype(y.dtype, np.integer) and scale:
            return (y.astype(np.float32) - zero_point) * scale
        return y.astype(np.float32)

    def predict_one(self, x: np.ndarray) -> np.ndarray:
        """Outputs for one sample (no batch axis), as float32."""
        self.interpreter.set_tensor(self.input["index"], self._quantise(x[None]))
        self.interpreter.invoke()
        return self._dequantise(self.interpreter.get_tensor(self.output["index"]))[0]

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Outputs for a batch of samples, run one at a time as on a device."""
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.shape == self.sample_shape:
            inputs = inputs[None]
        if inputs.shape[1:] != self.sample_shape:
            raise ValueError(f"inputs have shape {inputs.shape}; the model takes "
                             f"(N, {', '.join(map(str, self.sample_shape))})")
        return np.stack([self.predict_one(x) for x in inputs]) if len(inputs) else \
            np.zeros((0,) + tuple(self.output["shape"][1:]), np.float32)


class StepModel:
    """A TFLite model with named inputs (Keras input names) and outputs output_0, output_1, ...
    in the Keras model's order, run through its signature."""

    def __init__(self, path, num_threads: int = 1):
        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner()
        details = self.runner.get_input_details()
        self.inputs = {name: (tuple(d["shape"]), d["dtype"]) for name, d in details.items()}
        self.outputs = sorted(self.runner.get_output_details(), key=lambda n: int(n.rsplit("_", 1)[1]))

    def op_names(self) -> list[str]:
        return sorted({op["op_name"] for op in self.interpreter._get_ops_details()})

    def __call__(self, **inputs: np.ndarray) -> list[np.ndarray]:
        results = self.runner(**{k: np.asarray(v, self.inputs[k][1]).reshape(self.inputs[k][0])
                                 for k, v in inputs.items()})
        return [results[name] for name in self.outputs]


def state_names(model: StepModel) -> list[str]:
    """A step model's state inputs, state_0, state_1, ... in order."""
    return sorted((n for n in model.inputs if n.startswith("state_")), key=lambda n: int(n.rsplit("_", 1)[1]))


class Generator:
    """Greedy generation with the step models of a seq2seq model or a language model."""

    def __init__(self, decoder, encoder=None, num_threads: int = 1):
        self.decoder = StepModel(decoder, num_threads)
        self.encoder = StepModel(encoder, num_threads) if encoder else None
        self.state_names = state_names(self.decoder)

    @classmethod
    def from_folder(cls, folder, variant: str = "float32") -> Generator:
        folder = Path(folder)
        encoder = folder / f"{variant}_encoder.tflite"
        return cls(folder / f"{variant}_decoder.tflite", encoder if encoder.exists() else None)

    def start(self, source: np.ndarray | None = None) -> list[np.ndarray]:
        """The first state: the encoder's vector for `source` (seq2seq), zeros otherwise."""
        if self.encoder is not None:
            (name,) = self.encoder.inputs
            return self.encoder(**{name: source[None]})
        return [np.zeros(self.decoder.inputs[n][0], np.float32) for n in self.state_names]

    def step(self, token: int, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Next-token probabilities (V,) and the new state after reading `token`."""
        probabilities, *states = self.decoder(token=np.array([[token]]), **dict(zip(self.state_names, states)))
        return probabilities[0], states

    def greedy(self, source: np.ndarray | None, prime: list[int], max_length: int,
               end: int | None = None) -> list[int]:
        """Read `prime`, then up to `max_length` most probable tokens, stopping after `end`."""
        states = self.start(source)
        for token in prime:
            probabilities, states = self.step(token, states)
        out = []
        for _ in range(max_length):
            out.append(int(np.argmax(probabilities)))
            if out[-1] == end:
                break
            probabilities, states = self.step(out[-1], states)
        return out

    def teacher_forced(self, source: np.ndarray | None, tokens: np.ndarray) -> np.ndarray:
        """The next-token probabilities after each of `tokens` (T, V), each step reading the
        given token rather than its own output (what the training model computes)."""
        states, rows = self.start(source), []
        for token in tokens:
            probabilities, states = self.step(int(token), states)
            rows.append(probabilities)
        return np.stack(rows)


def generate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="runner.py generate", description="Greedy generation "
                                     "with the step models of an archlab seq2seq or language model.")
    parser.add_argument("folder", help="the export folder: <variant>_decoder.tflite, generation.json")
    parser.add_argument("texts", nargs="*", help="questions (seq2seq) or primes (language model); "
                        "default: one per line on stdin")
    parser.add_argument("--variant", default="float32")
    parser.add_argument("--max-length", type=int, help="tokens to generate (default: generation.json's)")
    args = parser.parse_intermixed_args(argv)
    try:
        spec = json.loads((Path(args.folder) / "generation.json").read_text())
        generator = Generator.from_folder(args.folder, args.variant)
        vocabulary = spec["vocabulary"]
        index = {t: i for i, t in enumerate(vocabulary)}
        texts = args.texts or sys.stdin.read().splitlines()
        for text in texts:
            unknown = sorted({c for c in text if c not in index})
            if unknown and spec.get("unknown") is None:
                raise ValueError(f"{text!r} has characters outside the vocabulary: {''.join(unknown)!r}")
            ids = [index.get(c, spec.get("unknown")) for c in text]
            if generator.encoder is not None:
                if len(ids) > spec["source_length"]:
                    raise ValueError(f"{text!r} is longer than {spec['source_length']} tokens")
                source = np.array(ids + [0] * (spec["source_length"] - len(ids)), np.int32)
                out = generator.greedy(source, [spec["start"]], args.max_length or spec["max_length"],
                                       spec["end"])
            else:   # a language model reads the prime after its start token (a newline)
                out = generator.greedy(None, [spec["start"], *ids], args.max_length or spec["max_length"],
                                       spec.get("end"))
            print("".join(vocabulary[t] for t in out if t != spec.get("end")))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


class Forecaster:
    """A forecaster's step model (`<variant>_step.tflite`): one point in, the forecast of the
    next one out, its state carried from call to call (zeros to start with). `spec` is the
    export's `stream.json`: the window the model was trained on (the least warm-up), the
    channels, and the scaling (each column standardised with the training series' mean and
    standard deviation)."""

    def __init__(self, path, spec: dict, num_threads: int = 1):
        self.model = StepModel(path, num_threads)
        self.spec = spec
        self.state_names = state_names(self.model)
        self.states = self.zero_states()

    @classmethod
    def from_folder(cls, folder, variant: str = "float32") -> Forecaster:
        folder = Path(folder)
        return cls(folder / f"{variant}_step.tflite", json.loads((folder / "stream.json").read_text()))

    def zero_states(self) -> list[np.ndarray]:
        return [np.zeros(self.model.inputs[n][0], np.float32) for n in self.state_names]

    def step(self, point: np.ndarray) -> np.float32:
        """Read one point (channels,), standardised: the forecast of the next one."""
        forecast, *self.states = self.model(point=point, **dict(zip(self.state_names, self.states)))
        return forecast.reshape(-1)[0]

    def read(self, points: np.ndarray) -> np.ndarray:
        """Read standardised points (T, channels) in order: the forecast after each (T,)."""
        return np.array([self.step(p) for p in points], np.float32)

    def free_run(self, first: float, steps: int) -> np.ndarray:
        """`first` (the last forecast) and `steps` - 1 more, each fed back as the next point."""
        out = [np.float32(first)]
        while len(out) < steps:
            out.append(self.step(np.array([out[-1]], np.float32)))
        return np.array(out[:steps], np.float32)

    def scale(self, points: np.ndarray) -> np.ndarray:
        if "mean" not in self.spec:
            raise ValueError("stream.json records no scaling: give a standardised series with --scaled")
        return ((points - np.asarray(self.spec["mean"])) / np.asarray(self.spec["std"])).astype(np.float32)

    def unscale(self, values: np.ndarray) -> np.ndarray:
        return values * self.spec["std"][0] + self.spec["mean"][0]


def read_series(path: str, channels: int, columns: list[str] | None = None) -> np.ndarray:
    """A series as (T, channels) float32: a `.npy` array, or a CSV file. A CSV's header row
    picks `columns` by name (any order, other columns ignored) where the model names them;
    without names, or without a header, its columns are the model's, in order."""
    if path.endswith(".npy"):
        series = np.load(path)
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:   # a spreadsheet's byte-order mark skipped
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
        if not rows:
            raise ValueError(f"{path}: no rows")
        header = None
        try:
            float(rows[0][0])
        except ValueError:
            header, rows = [h.strip() for h in rows[0]], rows[1:]
        if header is not None and columns:
            missing = [c for c in columns if c not in header]
            if missing:
                raise ValueError(f"{path}: no column {missing[0]!r} (the model reads {', '.join(columns)}; "
                                 f"the file has {', '.join(header)})")
            rows = [[row[header.index(c)] if header.index(c) < len(row) else "" for c in columns] for row in rows]
        try:
            series = np.array([[float(v) for v in row] for row in rows])
        except ValueError as e:
            raise ValueError(f"{path}: not a CSV of numbers ({e})") from None
    series = np.asarray(series, np.float32)
    series = series.reshape(-1, 1) if series.ndim == 1 else series
    if series.ndim != 2 or series.shape[1] != channels or not len(series):
        raise ValueError(f"{path}: a series shaped {series.shape}; the model reads (T, {channels}) points"
                         + (f" ({', '.join(columns)})" if columns else ""))
    if not np.all(np.isfinite(series)):
        raise ValueError(f"{path}: the series has missing or infinite values")
    return series


def forecast(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="runner.py forecast", description="Stream a series point by point "
                                     "through an archlab forecaster's step model: after each point, the forecast "
                                     "of the next one (one line each), then --free-run N points generated from "
                                     "the last state, each forecast fed back as the next point.")
    parser.add_argument("folder", help="the export folder: <variant>_step.tflite, stream.json")
    parser.add_argument("series", help="a .npy array (T,) or (T, channels), or a CSV file: the model's "
                        "columns, in order or named in a header row")
    parser.add_argument("--free-run", type=int, default=0, metavar="N", help="points to generate after the series")
    parser.add_argument("--variant", default="float32")
    parser.add_argument("--scaled", action="store_true", help="the series is already standardised as in training "
                        "(and the forecasts are printed so); default: original units")
    parser.add_argument("--output", help="also save the printed values to this .npy file")
    args = parser.parse_args(argv)
    try:
        model = Forecaster.from_folder(args.folder, args.variant)
        series = read_series(args.series, model.spec["channels"], model.spec.get("columns"))
        points = series if args.scaled else model.scale(series)
        values = model.read(points)
        if args.free_run:
            if model.spec["channels"] != 1:
                raise ValueError("--free-run feeds forecasts back: only for a model of one channel")
            values = np.concatenate([values, model.free_run(values[-1], args.free_run + 1)[1:]])
        values = values if args.scaled else model.unscale(values)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output:
        np.save(args.output, values)
    for value in values:
        print(f"{value:.6g}")
    return 0


class Autoencoder:
    """An autoencoder's `<variant>_encoder.tflite` (image -> code; a VAE's gives its mean
    first) and `<variant>_decoder.tflite` (code -> image; the VAE's generator)."""

    def __init__(self, folder, variant: str = "float32", num_threads: int = 1):
        self.encoder = StepModel(Path(folder) / f"{variant}_encoder.tflite", num_threads)
        self.decoder = StepModel(Path(folder) / f"{variant}_decoder.tflite", num_threads)
        self.code_size = int(self.decoder.inputs["code"][0][-1])

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.encoder(image=image[None])[0][0]

    def decode(self, code: np.ndarray) -> np.ndarray:
        return self.decoder(code=code[None])[0][0]

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(image))


def reconstruct(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="runner.py reconstruct", description="Reconstruct images with an "
                                     "archlab autoencoder's encoder and decoder; prints each image's "
                                     "reconstruction error (mean squared, per pixel), the anomaly score.")
    parser.add_argument("folder", help="the export folder: <variant>_encoder.tflite, <variant>_decoder.tflite")
    parser.add_argument("images", help="a .npy file of float32 images in [0, 1], (N, H, W, C) or one (H, W, C)")
    parser.add_argument("--variant", default="float32")
    parser.add_argument("--output", help="also save the reconstructions to this .npy file")
    args = parser.parse_args(argv)
    try:
        model = Autoencoder(args.folder, args.variant)
        images = np.load(args.images).astype(np.float32)
        shape = tuple(int(n) for n in model.encoder.inputs["image"][0][1:])
        if images.size == 0 or images.size % int(np.prod(shape)):
            raise ValueError(f"{args.images}: an array shaped {images.shape} does not hold images of {shape}")
        images = images.reshape((-1, *shape))
        outputs = np.stack([model.reconstruct(image) for image in images])
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output:
        np.save(args.output, outputs)
    for image, output in zip(images, outputs):
        print(f"{float(np.mean((output - image) ** 2)):.6g}")
    return 0


def sample(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="runner.py sample", description="New images from a variational "
                                     "autoencoder's decoder: codes drawn from its prior N(0, I).")
    parser.add_argument("folder", help="the export folder: <variant>_decoder.tflite")
    parser.add_argument("count", type=int, help="how many images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="float32")
    parser.add_argument("--output", required=True, help="the .npy file for the images (N, H, W, C)")
    args = parser.parse_args(argv)
    try:
        decoder = StepModel(Path(args.folder) / f"{args.variant}_decoder.tflite")
        codes = np.random.default_rng(args.seed).standard_normal((args.count, decoder.inputs["code"][0][-1]))
        np.save(args.output, np.stack([decoder(code=code[None])[0][0] for code in codes.astype(np.float32)]))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.count} images in {args.output}")
    return 0


def tree_arrays(arrays, sample_shape: tuple) -> np.ndarray:
    """Trees as a tree model's inputs (n, N, 1 + A): from `node_tokens` (n, N') and
    `children` (n, N', A') in post-order, node 0 the padding node (as the ListOps builder
    writes them), zero-padded or cut to the model's N nodes and A child slots."""
    missing = sorted({"node_tokens", "children"} - set(arrays))
    if missing:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise ValueError(f"the trees file has no {' or '.join(missing)} (it has {found})")
    tokens, children = np.asarray(arrays["node_tokens"]), np.asarray(arrays["children"])
    if tokens.ndim == 1:   # one tree
        tokens, children = tokens[None], children[None]
    if tokens.ndim != 2 or children.shape[:2] != tokens.shape or children.ndim != 3:
        raise ValueError(f"node_tokens {tokens.shape} and children {children.shape}: expected (n, N) and (n, N, A)")
    nodes, slots = int(sample_shape[0]), int(sample_shape[1]) - 1
    sizes = np.count_nonzero(tokens, axis=1) + 1
    if sizes.max(initial=0) > nodes or np.any(children[:, :, slots:]) or children.max(initial=0) >= nodes:
        raise ValueError(f"a tree has more than {nodes - 1} nodes or {slots} children: more than the model takes")
    out = np.zeros((len(tokens), nodes, 1 + slots), np.int32)
    width = min(nodes, tokens.shape[1])
    out[:, :width, 0] = tokens[:, :width]
    out[:, :width, 1:1 + min(slots, children.shape[2])] = children[:, :width, :slots]
    return out


def tree(argv: list[str]) -> int:
    def trees(path: str, model: TFLiteModel) -> np.ndarray:
        with np.load(path) as arrays:
            return tree_arrays(arrays, model.sample_shape)

    return predict(argv, "runner.py tree", "Classify trees with an archlab tree model (a recursive net or "
                   "Tree-LSTM): one class per tree.", "a .tflite file whose input is (1, N, 1 + A) node arrays",
                   "a .npz file of node_tokens (n, N) and children (n, N, A), post-order", trees)


def predict(argv: list[str], prog: str | None, description: str, model_help: str, inputs_help: str,
            load=lambda path, model: np.load(path)) -> int:
    """Predict with one model, one line per input; `load(path, model)` reads the inputs."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("model", help=model_help)
    parser.add_argument("inputs", help=inputs_help)
    parser.add_argument("--labels", help="a text file of class names, one per line")
    parser.add_argument("--output", help="also save the raw outputs to this .npy file")
    args = parser.parse_args(argv)
    try:
        model = TFLiteModel(args.model)
        outputs = model.predict(load(args.inputs, model))
        names = open(args.labels).read().splitlines() if args.labels else None
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output:
        np.save(args.output, outputs)
    for row in outputs:
        print(describe(row, names))
    return 0


COMMANDS = {"generate": generate, "reconstruct": reconstruct, "sample": sample, "tree": tree, "forecast": forecast}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return predict(argv, None, "Predict with an archlab TFLite model: a class (name) per input, or its value "
                   "for one-output models.", "a .tflite file", "a .npy file of inputs")


def describe(output: np.ndarray, names: list[str] | None = None) -> str:
    """One example's output as text: its class (one per step for per-step models), by
    name with `names`; a model with one output (forecasting, regression) prints its value."""
    if output.shape[-1] == 1 and not names:
        return " ".join(f"{v:.6g}" for v in output.reshape(-1))
    classes = np.atleast_1d(output.argmax(axis=-1))
    return " ".join(names[c] if names else str(int(c)) for c in classes)


if __name__ == "__main__":
    sys.exit(main())
