"""The export of most architectures: one model, input -> output, with the batch fixed to 1
(`window.WindowModel`: rebuilt from its builder with a batch of 1, int8 unrolled)."""

from __future__ import annotations

from pipelines.exporters.window import WindowModel


class SingleModel(WindowModel):
    """`<variant>.tflite`; parity: its outputs on the test inputs against Keras's."""
