"""Autoencoders (course notes, unit 5): vanilla, deep, convolutional, denoising, variational.

An autoencoder is an hourglass: an encoder maps the input x to a small code z (the latent
representation), a mirrored decoder maps z back to x̂, and the whole is trained without labels
to make x̂ close to x (mean squared error, or binary cross-entropy for pixels in [0, 1]):

    z = enc(x),   x̂ = dec(z),   loss = ||x − x̂||² / n

What keeps it from copying its input: a code smaller than the input (every kind here), noise
on the input while training (denoising: x̃ = x + noise, loss against the clean x), or the
variational autoencoder's prior. The VAE's encoder gives a Gaussian q(z|x) = N(μ(x), σ²(x));
z is drawn by reparameterisation, z = μ + σ ⊙ ε with ε ~ N(0, I), so gradients flow through μ
and σ; its loss is the negative evidence lower bound (ELBO),

    −ELBO = E_q[−log p(x|z)] + KL(q(z|x) || N(0, I)),
    KL = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²)

with a Bernoulli decoder, −log p(x|z) = the binary cross-entropy summed over pixels. At
inference the VAE reconstructs from μ; new samples are dec(z) for z ~ N(0, I).

Every builder names its two halves `encoder` and `decoder` (nested Keras models), which the
features, anomaly scores, generation and TFLite export use on their own. The task's head is
the reconstruction: `units` = the input's size, a sigmoid.

Hyperparameters:
    code_size:     width of the code z (every kind).
    hidden_units:  deep, denoising, variational: encoder widths, input side first; the decoder
                   mirrors them. (vanilla: none, the code is the one hidden layer.)
    filters:       convolutional: channels of each stride-2 convolution, input side first;
                   the decoder mirrors them with transposed convolutions.
    kernel_size:   convolutional: the filters' side.
    activation:    hidden layers' activation (the code of the deterministic kinds is linear).
    noise:         denoising: gaussian (x + N(0, level²)), masking (each pixel zeroed with
                   probability level) or salt_and_pepper (each pixel set to 0 or 1 with
                   probability level); only while training.
    noise_level:   denoising: the level above.
    beta:          variational: weight of the KL term (1: the ELBO).
"""

from __future__ import annotations

import math
from typing import Literal

import keras
import numpy as np
from keras import layers
from pydantic import Field

from models.registry import OUTPUT_DTYPE, Head, Hyperparameters, register

RECONSTRUCTION = ("reconstruction",)


class VanillaParams(Hyperparameters):
    code_size: int = Field(default=32, ge=1)
    activation: str = "relu"


class DeepParams(VanillaParams):
    hidden_units: list[int] = Field(default=[256, 128], min_length=1)


class ConvParams(VanillaParams):
    filters: list[int] = Field(default=[32, 64], min_length=1)
    kernel_size: int = Field(default=3, ge=1)


class DenoisingParams(DeepParams):
    noise: Literal["gaussian", "masking", "salt_and_pepper"] = "gaussian"
    noise_level: float = Field(default=0.3, gt=0.0, lt=1.0)


class VariationalParams(DeepParams):
    code_size: int = Field(default=16, ge=1)
    beta: float = Field(default=1.0, gt=0.0)


@keras.saving.register_keras_serializable("archlab")
class InputNoise(layers.Layer):
    """Corrupts its input while training only (the denoising autoencoder's x̃); the noise's
    seed is `seed`, or by default one drawn from the global (the experiment's) seed."""

    def __init__(self, kind: str = "gaussian", level: float = 0.3, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.level, self.seed = kind, level, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        return corrupt(inputs, self.kind, self.level, self.generator)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "level": self.level, "seed": self.seed}


def corrupt(x, kind: str, level: float, seed):
    """x corrupted by `kind` noise at `level`, clipped to [0, 1]; `seed` an int or a
    keras.random.SeedGenerator (also used to score every model on the same noisy inputs)."""
    shape = keras.ops.shape(x)
    if kind == "gaussian":
        return keras.ops.clip(x + level * keras.random.normal(shape, seed=seed), 0.0, 1.0)
    hit = keras.random.uniform(shape, seed=seed) < level
    if kind == "masking":
        return keras.ops.where(hit, 0.0, x)
    if kind == "salt_and_pepper":
        # a second, different draw: an int seed gives the same numbers every time
        salt = keras.random.uniform(shape, seed=seed + 1 if isinstance(seed, int) else seed) < 0.5
        return keras.ops.where(hit, keras.ops.cast(salt, x.dtype), x)
    raise ValueError(f"unknown noise {kind!r}; known: gaussian, masking, salt_and_pepper")


def _check_head(inputs: keras.KerasTensor, head: Head) -> tuple[int, ...]:
    shape = tuple(inputs.shape[1:])
    if head.units != math.prod(shape):
        raise ValueError(f"an autoencoder reconstructs its input: the head must have {math.prod(shape)} "
                         f"units (the input's size), not {head.units}")
    return shape


def _dense_halves(shape, head: Head, code_size: int, hidden: list[int], activation: str, batch_size):
    """Encoder (flatten, hidden widths, linear code) and the mirrored decoder."""
    x = keras.Input(shape, batch_size=batch_size, name="image")
    h = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(hidden):
        h = layers.Dense(units, activation=activation, name=f"encode_{i}")(h)
    encoder = keras.Model(x, layers.Dense(code_size, name="code")(h), name="encoder")
    z = keras.Input((code_size,), batch_size=batch_size, name="code")
    h = z
    for i, units in enumerate(reversed(hidden)):
        h = layers.Dense(units, activation=activation, name=f"decode_{i}")(h)
    out = head.layer("pixels")(h)
    decoder = keras.Model(z, layers.Reshape(shape, dtype=OUTPUT_DTYPE, name="reconstruction")(out), name="decoder")
    return encoder, decoder


def _assemble(inputs, encoder, decoder, name: str, noise: layers.Layer | None = None) -> keras.Model:
    x = noise(inputs) if noise is not None else inputs
    return keras.Model(inputs, decoder(encoder(x)), name=name)


@register("autoencoder", hyperparameters=VanillaParams, tasks=RECONSTRUCTION)
def build_vanilla(inputs: keras.KerasTensor, head: Head, params: VanillaParams) -> keras.Model:
    """Vanilla autoencoder: one hidden layer, the code, between input and reconstruction."""
    shape = _check_head(inputs, head)
    x = keras.Input(shape, batch_size=inputs.shape[0], name="image")
    encoder = keras.Model(x, layers.Dense(params.code_size, activation=params.activation, name="code")(
        layers.Flatten(name="flatten")(x)), name="encoder")
    z = keras.Input((params.code_size,), batch_size=inputs.shape[0], name="code")
    pixels = head.layer("pixels")(z)
    decoder = keras.Model(z, layers.Reshape(shape, dtype=OUTPUT_DTYPE, name="reconstruction")(pixels), name="decoder")
    return _assemble(inputs, encoder, decoder, "autoencoder")


@register("deep_autoencoder", hyperparameters=DeepParams, tasks=RECONSTRUCTION)
def build_deep(inputs: keras.KerasTensor, head: Head, params: DeepParams,
               noise: layers.Layer | None = None) -> keras.Model:
    """Deep autoencoder: stacked dense encoder, linear code, mirrored decoder."""
    shape = _check_head(inputs, head)
    encoder, decoder = _dense_halves(shape, head, params.code_size, params.hidden_units, params.activation,
                                     inputs.shape[0])
    return _assemble(inputs, encoder, decoder, "denoising_autoencoder" if noise else "deep_autoencoder", noise)


@register("denoising_autoencoder", hyperparameters=DenoisingParams, tasks=RECONSTRUCTION)
def build_denoising(inputs: keras.KerasTensor, head: Head, params: DenoisingParams) -> keras.Model:
    """Denoising autoencoder: the deep one, its input corrupted while training."""
    return build_deep(inputs, head, params, InputNoise(params.noise, params.noise_level, name="noise"))


@register("conv_autoencoder", hyperparameters=ConvParams, tasks=RECONSTRUCTION)
def build_conv(inputs: keras.KerasTensor, head: Head, params: ConvParams) -> keras.Model:
    """Convolutional autoencoder: stride-2 convolutions to a dense code, transposed
    convolutions back."""
    shape = _check_head(inputs, head)
    batch = inputs.shape[0]
    x = keras.Input(shape, batch_size=batch, name="image")
    h = x
    for i, filters in enumerate(params.filters):
        h = layers.Conv2D(filters, params.kernel_size, strides=2, padding="same", activation=params.activation,
                          name=f"conv_{i}")(h)
    grid = tuple(h.shape[1:])
    code = layers.Dense(params.code_size, name="code")(layers.Flatten(name="flatten")(h))
    encoder = keras.Model(x, code, name="encoder")
    z = keras.Input((params.code_size,), batch_size=batch, name="code")
    h = layers.Reshape(grid, name="grid")(layers.Dense(math.prod(grid), activation=params.activation,
                                                       name="expand")(z))
    for i, filters in enumerate(reversed(params.filters)):
        h = layers.Conv2DTranspose(filters, params.kernel_size, strides=2, padding="same",
                                   activation=params.activation, name=f"deconv_{i}")(h)
    h = layers.Conv2D(shape[-1], params.kernel_size, padding="same", activation=head.activation,
                      dtype=OUTPUT_DTYPE, name="pixels")(h)
    if tuple(h.shape[1:]) != shape:   # sides that are not a multiple of 2^len(filters)
        h = layers.Resizing(shape[0], shape[1], dtype=OUTPUT_DTYPE, name="resize")(h)
    decoder = keras.Model(z, h, name="decoder")
    return _assemble(inputs, encoder, decoder, "conv_autoencoder")


@keras.saving.register_keras_serializable("archlab")
class VariationalAutoencoder(keras.Model):
    """A VAE: `encoder` x -> [μ, log σ²], `decoder` z -> x̂. Its own `train_step` minimises
    the negative ELBO (summed binary cross-entropy + beta × KL); calling it reconstructs from μ
    at inference and from a sampled z while training. ε's seed: `seed`, or by default one
    drawn from the global seed (the experiment's, `keras.utils.set_random_seed`)."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model, beta: float = 1.0, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.beta, self.seed = encoder, decoder, beta, seed
        self.generator = keras.random.SeedGenerator(seed)
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def sample_code(self, mean, log_var):
        """z = μ + σ ε, ε ~ N(0, I): the reparameterisation trick."""
        epsilon = keras.random.normal(keras.ops.shape(mean), seed=self.generator)
        return mean + keras.ops.exp(0.5 * log_var) * epsilon

    def call(self, inputs, training=False):
        mean, log_var = self.encoder(inputs, training=training)
        return self.decoder(self.sample_code(mean, log_var) if training else mean, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def negative_elbo(self, x, training: bool):
        """(−ELBO, reconstruction term, KL term), each the mean over the batch, in float32
        (the code and the pixels are float32 layers under a mixed policy too)."""
        mean, log_var = self.encoder(x, training=training)
        reconstruction = self.decoder(self.sample_code(mean, log_var), training=training)
        x = keras.ops.cast(x, "float32")
        flat_x = keras.ops.reshape(x, (keras.ops.shape(x)[0], -1))
        flat_r = keras.ops.reshape(reconstruction, (keras.ops.shape(x)[0], -1))
        bce = keras.ops.sum(keras.ops.binary_crossentropy(flat_x, flat_r), axis=-1)
        kl = -0.5 * keras.ops.sum(1.0 + log_var - keras.ops.square(mean) - keras.ops.exp(log_var), axis=-1)
        bce, kl = keras.ops.mean(bce), keras.ops.mean(kl)
        return bce + self.beta * kl, bce, kl

    def _track(self, loss, bce, kl):
        self.loss_tracker.update_state(loss)
        self.reconstruction_tracker.update_state(bce)
        self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}

    # One train and test step per backend, as Keras's guides to customising `fit` write them:
    # TensorFlow's updates the variables in place, JAX's is a pure function of the state Keras
    # hands it and returns the new state.
    def train_step(self, *args):
        return getattr(self, f"_{keras.backend.backend()}_train_step")(*args)

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_test_step(*args)
        return self._track(*self.negative_elbo(_images(args[0]), training=False))

    def _tensorflow_train_step(self, data):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss, bce, kl = self.negative_elbo(_images(data), training=True)
            scaled = self.optimizer.scale_loss(loss)
        self.optimizer.apply(tape.gradient(scaled, self.trainable_weights), self.trainable_weights)
        return self._track(loss, bce, kl)

    def _stateless_elbo(self, trainable, fixed, x, training: bool):
        """negative_elbo on the given variable values: (−ELBO, (bce, kl, new non-trainable
        values)), the seed generator's state among the latter."""
        mapping = [*zip(self.trainable_variables, trainable), *zip(self.non_trainable_variables, fixed)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, bce, kl = self.negative_elbo(x, training=training)
        return loss, (bce, kl, [scope.get_current_value(v) for v in self.non_trainable_variables])

    def _jax_train_step(self, state, data):
        import jax

        trainable, fixed, optimizer_vars, metric_vars = state
        x = _images(data)

        def scaled(trainable, fixed):
            loss, aux = self._stateless_elbo(trainable, fixed, x, training=True)
            return self.optimizer.scale_loss(loss), (loss, aux)

        (_, (loss, (bce, kl, fixed))), grads = jax.value_and_grad(scaled, has_aux=True)(trainable, fixed)
        trainable, optimizer_vars = self.optimizer.stateless_apply(optimizer_vars, grads, trainable)
        logs, metric_vars = self._stateless_track(metric_vars, loss, bce, kl)
        return logs, (trainable, fixed, optimizer_vars, metric_vars)

    def _jax_test_step(self, state, data):
        trainable, fixed, metric_vars = state
        loss, (bce, kl, fixed) = self._stateless_elbo(trainable, fixed, _images(data), training=False)
        logs, metric_vars = self._stateless_track(metric_vars, loss, bce, kl)
        return logs, (trainable, fixed, metric_vars)

    def _stateless_track(self, metric_vars, *values):
        logs, updated = {}, []
        for metric, value in zip(self.metrics, values):
            own = metric_vars[len(updated):len(updated) + len(metric.variables)]
            own = metric.stateless_update_state(own, value)
            logs[metric.name] = metric.stateless_result(own)
            updated.extend(own)
        return logs, updated

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed,
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder)}

    @classmethod
    def from_config(cls, config):
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(encoder, decoder, **config)


def _images(data):
    """The images of a batch: (x, y) or (x,) or x."""
    return data[0] if isinstance(data, (tuple, list)) else data


SAMPLES, SAMPLE_SEED = 30, 0   # codes drawn from the prior N(0, I) for the VAE's pictures


def evaluate_vae(model: VariationalAutoencoder, images: np.ndarray, batch_size: int = 256):
    """The VAE's test ELBO (nats per image: −(summed cross-entropy + beta × KL), with one
    sampled code per image) and `SAMPLES` images decoded from codes drawn from N(0, I)."""
    elbo = -float(model.evaluate(images, batch_size=batch_size, verbose=0, return_dict=True)["loss"])
    z = np.random.default_rng(SAMPLE_SEED).normal(size=(SAMPLES, model.decoder.input_shape[-1])).astype(np.float32)
    samples = model.decoder.predict(z, verbose=0)
    return {"test_elbo": elbo}, {"vae_samples": {"samples from N(0, I)": samples[:10], "": samples[10:20],
                                                 " ": samples[20:30]}}


@register("vae", hyperparameters=VariationalParams, tasks=RECONSTRUCTION, evaluate=evaluate_vae)
def build_vae(inputs: keras.KerasTensor, head: Head, params: VariationalParams) -> keras.Model:
    """Variational autoencoder: Gaussian code by reparameterisation, loss the negative ELBO."""
    shape = _check_head(inputs, head)
    batch = inputs.shape[0]
    x = keras.Input(shape, batch_size=batch, name="image")
    h = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(params.hidden_units):
        h = layers.Dense(units, activation=params.activation, name=f"encode_{i}")(h)
    encoder = keras.Model(x, [layers.Dense(params.code_size, dtype=OUTPUT_DTYPE, name="code_mean")(h),
                              layers.Dense(params.code_size, dtype=OUTPUT_DTYPE, name="code_log_var")(h)],
                          name="encoder")
    _, decoder = _dense_halves(shape, head, params.code_size, params.hidden_units, params.activation, batch)
    model = VariationalAutoencoder(encoder, decoder, beta=params.beta, name="vae")
    model(keras.ops.zeros((1, *shape)))   # build the weights
    return model
