"""Run an archlab TFLite model on a device: needs only `ai_edge_litert` and `numpy`.

    python runner.py model.tflite inputs.npy [--labels labels.txt] [--output preds.npy]

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
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Predict with an archlab TFLite model: a class "
                                     "(name) per input, or its value for one-output models.")
    parser.add_argument("model", help="a .tflite file")
    parser.add_argument("inputs", help="a .npy file of inputs")
    parser.add_argument("--labels", help="a text file of class names, one per line")
    parser.add_argument("--output", help="also save the raw outputs to this .npy file")
    args = parser.parse_args(argv)
    try:
        model = TFLiteModel(args.model)
        outputs = model.predict(np.load(args.inputs))
        names = open(args.labels).read().splitlines() if args.labels else None
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output:
        np.save(args.output, outputs)
    for row in outputs:
        print(describe(row, names))
    return 0


def describe(output: np.ndarray, names: list[str] | None = None) -> str:
    """One example's output as text: its class (one per step for per-step models), by
    name with `names`; a model with one output (forecasting, regression) prints its value."""
    if output.shape[-1] == 1 and not names:
        return " ".join(f"{v:.6g}" for v in output.reshape(-1))
    classes = np.atleast_1d(output.argmax(axis=-1))
    return " ".join(names[c] if names else str(int(c)) for c in classes)


if __name__ == "__main__":
    sys.exit(main())
