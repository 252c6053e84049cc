"""The export of an autoencoder: its encoder and decoder, each `<variant>_<half>.tflite`
(the decoder alone is the VAE's generator from a latent vector).

Parity: the encoder on the test images, the decoder on Keras's codes (the encoder's first
output: a VAE's mean), each against Keras; the outputs scored are the decoder's file on
the encoder's file's codes. Latency is one image encoded and decoded. No int8 variant.
"""

from __future__ import annotations

import keras
import numpy as np
from tqdm import tqdm

from edge.runner import StepModel
from models.registry import inference_graph
from pipelines import config
from pipelines.exporters import tflite
from pipelines.runtime import StageError


def _first(outputs):
    """The code: the encoder's first output (a VAE's encoder also gives the log variance)."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


class Halves:
    def __init__(self, model: keras.Model, exp: config.Experiment, task, splits, variants):
        if "int8" in variants:
            raise StageError(f"{exp.architecture}: int8 is not exported for autoencoder halves "
                             "(export.variants: float32, dynamic_range, float16)")
        self.parts = {name: tflite.fixed_batch(model.get_layer(name)) for name in ("encoder", "decoder")}

    def keras_latency_ms(self, x, runs: int) -> float:
        encode, decode = (inference_graph(m) for m in self.parts.values())
        return tflite.median_latency_ms(lambda image: decode(_first(encode(image[None]))), x[0], runs)

    def write(self, variant: str, folder, representative) -> list:
        return tflite.write_parts(self.parts, variant, folder)

    @staticmethod
    def files(folder, variant: str) -> list:
        return [folder / f"{variant}_encoder.tflite", folder / f"{variant}_decoder.tflite"]

    def run(self, files, x, reference, desc: str):
        encoder, decoder = (StepModel(f) for f in files)
        for part, path in zip((encoder, decoder), files):
            tflite.check_builtin(part, path)
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
