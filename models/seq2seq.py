"""Encoder–decoder sequence to sequence (course notes, unit 5).

The encoder (stacked LSTM or GRU layers) reads the input sequence x_1..x_n; its final hidden
state, the encoder vector, is the decoder's initial state. The decoder emits one token at a
time from its own hidden state,

    h_t = cell(y_{t-1}, h_{t-1}),   h_0 = encoder vector
    y_t = softmax(W_S h_t)

In training the decoder reads the true previous token (teacher forcing); at inference it
reads its own previous output: greedily (the most probable token) or with a beam search of
`beam_width` hypotheses. Tokens are integers, 0 the padding (masked), 1 the start token fed
to the decoder first, 2 the end token that stops decoding.

For inference and TFLite the trained model splits into an encoder (tokens -> encoder vector)
and a one-step decoder (previous token and state in, next-token probabilities and state
out), sharing its layers (`step_models`).

Hyperparameters:
    cell:           lstm or gru.
    units:          width of each recurrent layer (encoder and decoder alike).
    layers:         stacked recurrent layers in the encoder and in the decoder.
    embedding_dim:  width of the token embedding (shared by encoder and decoder inputs).
    dropout_rate:   dropout on each recurrent layer's inputs while training.
"""

from __future__ import annotations

from typing import Literal

import keras
import numpy as np
from keras import layers
from pydantic import Field

from models.registry import Head, Hyperparameters, register

PAD, START, END = 0, 1, 2
CELLS = {"lstm": layers.LSTM, "gru": layers.GRU}


class Seq2SeqParams(Hyperparameters):
    cell: Literal["lstm", "gru"] = "lstm"
    units: int = Field(default=128, ge=1)
    layers: int = Field(default=1, ge=1)
    embedding_dim: int = Field(default=32, ge=1)
    dropout_rate: float = Field(default=0.0, ge=0.0, lt=1.0)


def _states_per_layer(params: Seq2SeqParams) -> int:
    return 2 if params.cell == "lstm" else 1


def build_seq2seq(inputs: keras.KerasTensor, head: Head, params: Seq2SeqParams) -> keras.Model:
    """Encoder–decoder with teacher forcing: (source tokens, decoder tokens) -> next tokens."""
    if not head.per_step:
        raise ValueError("seq2seq emits one token per step: the task's head must be per step")
    vocabulary = head.units
    embedding = layers.Embedding(vocabulary, params.embedding_dim, mask_zero=True, name="embedding")
    x = embedding(inputs)
    states = []
    for i in range(params.layers):
        encoder = CELLS[params.cell](params.units, return_sequences=i < params.layers - 1, return_state=True,
                                     dropout=params.dropout_rate, name=f"encoder_{i}")
        x, *layer_states = encoder(x)
        states.append(layer_states)
    decoder_inputs = keras.Input(shape=(None,), dtype="int32", batch_size=inputs.shape[0],
                                 name="decoder_inputs")
    y = embedding(decoder_inputs)
    for i in range(params.layers):
        decoder = CELLS[params.cell](params.units, return_sequences=True, return_state=True,
                                     dropout=params.dropout_rate, name=f"decoder_{i}")
        y, *_ = decoder(y, initial_state=states[i])
    outputs = head.layer()(y)
    return keras.Model([inputs, decoder_inputs], outputs, name=f"seq2seq_{params.cell}")


def step_models(model: keras.Model, batch_size: int | None = None) -> tuple[keras.Model, keras.Model]:
    """(encoder, one-step decoder) sharing the trained model's layers.

    encoder:  source tokens (B, n) -> the encoder vector: every layer's states, flat
    decoder:  [previous token (B, 1), *states] -> [next-token probabilities (B, V), *states]
    """
    source = keras.Input(shape=model.inputs[0].shape[1:], dtype="int32", batch_size=batch_size, name="source")
    embedding = model.get_layer("embedding")
    recurrent = [l for l in model.layers if isinstance(l, tuple(CELLS.values()))]
    encoders = sorted((l for l in recurrent if l.name.startswith("encoder_")), key=lambda l: l.name)
    decoders = sorted((l for l in recurrent if l.name.startswith("decoder_")), key=lambda l: l.name)
    x, flat = embedding(source), []
    for layer in encoders:
        x, *layer_states = layer(x)
        flat += layer_states
    encoder = keras.Model(source, flat, name="encoder")

    token = keras.Input(shape=(1,), dtype="int32", batch_size=batch_size, name="token")
    per_layer = len(flat) // len(decoders)
    state_inputs = [keras.Input(shape=(s.shape[-1],), batch_size=batch_size, name=f"state_{i}")
                    for i, s in enumerate(flat)]
    y, new_states = embedding(token), []
    for i, layer in enumerate(decoders):
        y, *layer_states = layer(y, initial_state=state_inputs[i * per_layer:(i + 1) * per_layer])
        new_states += layer_states
    probabilities = model.get_layer("outputs")(y[:, -1])
    decoder = keras.Model([token, *state_inputs], [probabilities, *new_states], name="decoder_step")
    return encoder, decoder


def greedy_decode(encoder, decoder, source: np.ndarray, max_length: int) -> np.ndarray:
    """The most probable token at each step, until END or `max_length`; (B, max_length),
    padded with PAD after END (END itself included)."""
    states = _numpy(encoder(source))
    token = np.full((len(source), 1), START, np.int32)
    out = np.full((len(source), max_length), PAD, np.int32)
    done = np.zeros(len(source), bool)
    for t in range(max_length):
        probabilities, *states = _numpy(decoder([token, *states]))
        token = np.argmax(probabilities, axis=-1).astype(np.int32)[:, None]
        out[:, t] = np.where(done, PAD, token[:, 0])
        done |= token[:, 0] == END
        if done.all():
            break
    return out


def beam_decode(encoder, decoder, source: np.ndarray, max_length: int, beam_width: int) -> np.ndarray:
    """Beam search: keep the `beam_width` most probable partial outputs (sum of log
    probabilities) at each step; a hypothesis ends at END. One source at a time."""
    results = np.full((len(source), max_length), PAD, np.int32)
    for i in range(len(source)):
        states = _numpy(encoder(source[i:i + 1]))
        beams = [(0.0, [], states)]
        finished = []
        for _ in range(max_length):
            candidates = []
            for score, tokens, beam_states in beams:
                previous = np.array([[tokens[-1] if tokens else START]], np.int32)
                probabilities, *next_states = _numpy(decoder([previous, *beam_states]))
                log_p = np.log(probabilities[0] + 1e-12)
                for token in np.argsort(log_p)[::-1][:beam_width]:
                    candidates.append((score + float(log_p[token]), tokens + [int(token)], next_states))
            candidates.sort(key=lambda c: -c[0])
            beams = []
            for candidate in candidates[:beam_width]:
                (finished if candidate[1][-1] == END else beams).append(candidate)
            if not beams:
                break
        best = max(finished or beams, key=lambda c: c[0])[1]
        results[i, :len(best)] = best
    return results


def _numpy(outputs) -> list[np.ndarray]:
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(o) for o in outputs]


register("seq2seq", hyperparameters=Seq2SeqParams, tasks=("sequence_to_sequence",))(build_seq2seq)
