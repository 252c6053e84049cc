"""Export strategies: how a task's trained model goes to TFLite files, checked against Keras.

    single.SingleModel   one model, input -> output, batch fixed to 1 (most tasks)
    stream.Streaming     a forecaster: its window model (as above) and its step model,
                         one point and the carried state in, the forecast and state out
    steps.StepModels     a generative model's step models: encoder and one-step decoder
    halves.Halves        an autoencoder's encoder and decoder

A task names its strategy (`Task.exporter`); `window` holds the window model's
export (SingleModel and Streaming are both), `tflite` what they all share: conversion
with builtin ops only, the Flex check, the float32 parity gate and latency timing.
"""
