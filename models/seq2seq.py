"""Encoder–decoder sequence to sequence, and a recurrent language model (course notes, unit 5).

The encoder (stacked LSTM or GRU layers) reads the input sequence x_1..x_n; its final hidden
state, the encoder vector, is the decoder's initial state. The decoder emits one token at a
time from its own hidden state,

    h_t = cell(y_{t-1}, h_{t-1}),   h_0 = encoder vector
    y_t = softmax(W_S h_t)

In training the decoder reads the true previous token (teacher forcing); at inference it
reads its own previous output: greedily (the most probable token) or with a beam search of
`beam_width` hypotheses. Tokens are integers, 0 the padding (masked), 1 the start token fed
to the decoder first, 2 the end token that stops decoding.

With `reverse_source` the encoder reads the source backwards (Sutskever et al. 2014): the
first source tokens are then the last read, close to the first outputs.

The language model (`rnn_lm`) is that decoder alone, from a zero state: it reads a text one
character at a time and gives the next character's probabilities at every step,
P(x_{t+1} | x_1..x_t) = softmax(W_S h_t); trained on a text shifted by one.

For inference and TFLite a trained model splits into step models sharing its layers
(`step_models`): an encoder (source tokens -> encoder vector; seq2seq only) and a
one-step decoder (previous token and state in, next-token probabilities and state out).

Hyperparameters (both architectures):
    cell:           lstm or gru.
    units:          width of each recurrent layer (encoder and decoder alike).
    layers:         stacked recurrent layers in the encoder and in the decoder.
    embedding_dim:  width of the token embedding (shared by encoder and decoder inputs).
    dropout_rate:   dropout on each recurrent layer's inputs while training.
    reverse_source: (seq2seq) the encoder reads the source last token first.

The beam's width is an evaluation setting (`evaluation.beam_width` of the experiment), not a
hyperparameter: it changes no weight.
"""

from __future__ import annotations

from typing import Literal

import keras
import numpy as np
from keras import layers
from pydantic import Field

from models.registry import Head, Hyperparameters, inference_graph, register

PAD, START, END = 0, 1, 2
CELLS = {"lstm": layers.LSTM, "gru": layers.GRU}


class LanguageModelParams(Hyperparameters):
    cell: Literal["lstm", "gru"] = "lstm"
    units: int = Field(default=128, ge=1)
    layers: int = Field(default=1, ge=1)
    embedding_dim: int = Field(default=32, ge=1)
    dropout_rate: float = Field(default=0.0, ge=0.0, lt=1.0)


class Seq2SeqParams(LanguageModelParams):
    reverse_source: bool = False


@keras.saving.register_keras_serializable("archlab")
class Reverse(layers.Layer):
    """The sequence axis reversed (token ids in, so before the embedding computes its mask)."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=1)


def _check_head(head: Head) -> int:
    if not head.per_step:
        raise ValueError("token models emit one token per step: the task's head must be per step")
    return head.units


def _decoder_stack(y, params: LanguageModelParams, initial_states=None):
    for i in range(params.layers):
        decoder = CELLS[params.cell](params.units, return_sequences=True, return_state=True,
                                     dropout=params.dropout_rate, name=f"decoder_{i}")
        y, *_ = decoder(y, initial_state=initial_states[i] if initial_states else None)
    return y


def build_seq2seq(inputs: keras.KerasTensor, head: Head, params: Seq2SeqParams) -> keras.Model:
    """Encoder–decoder with teacher forcing: (source tokens, decoder tokens) -> next tokens."""
    vocabulary = _check_head(head)
    embedding = layers.Embedding(vocabulary, params.embedding_dim, mask_zero=True, name="embedding")
    x = embedding(Reverse(name="reverse")(inputs) if params.reverse_source else inputs)
    states = []
    for i in range(params.layers):
        encoder = CELLS[params.cell](params.units, return_sequences=i < params.layers - 1, return_state=True,
                                     dropout=params.dropout_rate, name=f"encoder_{i}")
        x, *layer_states = encoder(x)
        states.append(layer_states)
    decoder_inputs = keras.Input(shape=(None,), dtype="int32", batch_size=inputs.shape[0],
                                 name="decoder_inputs")
    y = _decoder_stack(embedding(decoder_inputs), params, states)
    outputs = head.layer()(y)
    return keras.Model([inputs, decoder_inputs], outputs, name=f"seq2seq_{params.cell}")


def build_language_model(inputs: keras.KerasTensor, head: Head, params: LanguageModelParams) -> keras.Model:
    """Recurrent language model: tokens -> the next token's probabilities at every step."""
    vocabulary = _check_head(head)
    embedding = layers.Embedding(vocabulary, params.embedding_dim, name="embedding")
    outputs = head.layer()(_decoder_stack(embedding(inputs), params))
    return keras.Model(inputs, outputs, name=f"{params.cell}_language_model")


def step_models(model: keras.Model, batch_size: int | None = None) -> dict[str, keras.Model]:
    """The step models of a trained seq2seq or language model, sharing its layers:

    encoder:  source tokens (B, n) -> the encoder vector: every layer's states, flat
              (seq2seq only; the language model starts from zero states)
    decoder:  [previous token (B, 1), *states] -> [next-token probabilities (B, V), *states]
    """
    embedding = model.get_layer("embedding")
    recurrent = [l for l in model.layers if isinstance(l, tuple(CELLS.values()))]
    encoders = sorted((l for l in recurrent if l.name.startswith("encoder_")), key=lambda l: l.name)
    decoders = sorted((l for l in recurrent if l.name.startswith("decoder_")), key=lambda l: l.name)
    parts = {}
    if encoders:
        source = keras.Input(shape=model.inputs[0].shape[1:], dtype="int32", batch_size=batch_size,
                             name="source")
        reverse = [l for l in model.layers if isinstance(l, Reverse)]
        x, flat = embedding(reverse[0](source) if reverse else source), []
        for layer in encoders:
            x, *layer_states = layer(x)
            flat += layer_states
        parts["encoder"] = keras.Model(source, flat, name="encoder")
        widths = [s.shape[-1] for s in flat]
    else:
        per_layer = 2 if isinstance(decoders[0], layers.LSTM) else 1
        widths = [layer.units for layer in decoders for _ in range(per_layer)]

    token = keras.Input(shape=(1,), dtype="int32", batch_size=batch_size, name="token")
    per_layer = len(widths) // len(decoders)
    state_inputs = [keras.Input(shape=(w,), batch_size=batch_size, name=f"state_{i}")
                    for i, w in enumerate(widths)]
    y, new_states = embedding(token), []
    for i, layer in enumerate(decoders):
        y, *layer_states = layer(y, initial_state=state_inputs[i * per_layer:(i + 1) * per_layer])
        new_states += layer_states
    probabilities = model.get_layer("outputs")(y[:, -1])
    parts["decoder"] = keras.Model([token, *state_inputs], [probabilities, *new_states], name="decoder")
    return parts


def read(model: keras.Model, tokens: np.ndarray) -> np.ndarray:
    """A language model reading one text `tokens` (T,) in a single pass from a zero state:
    the next-token probabilities after each token, (T, V)."""
    embedding = model.get_layer("embedding")
    decoders = sorted((l for l in model.layers if isinstance(l, tuple(CELLS.values()))), key=lambda l: l.name)
    text = keras.Input(shape=(None,), dtype="int32", batch_size=1, name="text")
    y = embedding(text)
    for layer in decoders:
        y, *_ = layer(y)
    stream = keras.Model(text, model.get_layer("outputs")(y), name="stream")
    # predict runs a compiled graph; an eager call would step the recurrent loop in Python
    return stream.predict(np.asarray(tokens, np.int32)[None], batch_size=1, verbose=0)[0]


def zero_states(decoder: keras.Model, batch: int) -> list[np.ndarray]:
    """The initial state of a language model: zeros for each of the decoder's state inputs."""
    return [np.zeros((batch, i.shape[-1]), np.float32) for i in decoder.inputs[1:]]


def greedy_decode(encoder, decoder, source: np.ndarray, max_length: int) -> np.ndarray:
    """The most probable token at each step, until END or `max_length`; (B, max_length),
    padded with PAD after END (END itself included)."""
    states = _numpy(encoder.predict(source, batch_size=1024, verbose=0))
    step = _compiled(decoder)
    token = np.full((len(source), 1), START, np.int32)
    out = np.full((len(source), max_length), PAD, np.int32)
    done = np.zeros(len(source), bool)
    for t in range(max_length):
        probabilities, *states = step(token, states)
        token = np.argmax(probabilities, axis=-1).astype(np.int32)[:, None]
        out[:, t] = np.where(done, PAD, token[:, 0])
        done |= token[:, 0] == END
        if done.all():
            break
    return out


def beam_decode(encoder, decoder, source: np.ndarray, max_length: int, beam_width: int) -> np.ndarray:
    """Beam search: keep the `beam_width` most probable partial outputs (sum of log
    probabilities) at each step, every source at once; a hypothesis that has emitted END
    keeps its score and competes with the others. The best one per source, (B, max_length)
    padded like `greedy_decode` (a width of 1 is greedy decoding)."""
    n, w = len(source), beam_width
    states = [np.repeat(s, w, axis=0) for s in _numpy(encoder.predict(source, batch_size=1024, verbose=0))]
    step = _compiled(decoder)
    scores = np.full((n, w), -np.inf)
    scores[:, 0] = 0.0   # one live hypothesis to start with
    tokens = np.full((n, w, max_length), PAD, np.int32)
    done = np.zeros((n, w), bool)
    previous = np.full((n * w, 1), START, np.int32)
    for t in range(max_length):
        probabilities, *states = step(previous, states)
        log_p = np.log(probabilities.reshape(n, w, -1).astype(np.float64) + 1e-12)
        vocabulary = log_p.shape[-1]
        log_p[done] = -np.inf      # a finished hypothesis only continues with padding, at no cost
        log_p[done, PAD] = 0.0
        flat = (scores[:, :, None] + log_p).reshape(n, w * vocabulary)
        best = np.argsort(-flat, axis=1, kind="stable")[:, :w]
        origin, token = best // vocabulary, (best % vocabulary).astype(np.int32)
        scores = np.take_along_axis(flat, best, axis=1)
        was_done = np.take_along_axis(done, origin, axis=1)
        tokens = np.take_along_axis(tokens, origin[:, :, None], axis=1)
        tokens[:, :, t] = np.where(was_done, PAD, token)
        done = was_done | (token == END)
        rows = (np.arange(n)[:, None] * w + origin).ravel()
        states = [s[rows] for s in states]
        previous = token.reshape(-1, 1)
        if done.all():
            break
    return tokens[np.arange(n), np.argmax(scores, axis=1)]


def _numpy(outputs) -> list[np.ndarray]:
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def sample(decoder, prime: np.ndarray, steps: int, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Text from a language model: read `prime` (B, n) tokens, then draw `steps` tokens,
    each from softmax(log p / temperature) and fed back; (B, steps)."""
    step = _compiled(decoder)
    states = zero_states(decoder, len(prime))
    for t in range(prime.shape[1]):
        probabilities, *states = step(prime[:, t:t + 1], states)
    drawn = np.zeros((len(prime), steps), np.int32)
    for t in range(steps):
        logits = np.log(np.maximum(probabilities.astype(np.float64), 1e-12)) / temperature
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        drawn[:, t] = [rng.choice(p.shape[-1], p=row) for row in p]
        probabilities, *states = step(drawn[:, t:t + 1], states)
    return drawn


def _compiled(decoder):
    graph = inference_graph(decoder)
    return lambda token, states: _numpy(graph([keras.ops.convert_to_tensor(token, "int32"),
                                               *(keras.ops.convert_to_tensor(s) for s in states)]))


register("seq2seq", hyperparameters=Seq2SeqParams, tasks=("sequence_to_sequence",),
         steps=step_models)(build_seq2seq)
register("rnn_lm", hyperparameters=LanguageModelParams, tasks=("language_modelling",),
         steps=step_models)(build_language_model)
