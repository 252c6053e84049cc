"""The numerics probe: a fresh process per setting, the same weights for the same setting."""

from __future__ import annotations

import pytest

from pipelines import numerics

pytestmark = pytest.mark.slow   # three TensorFlow processes


def test_same_setting_same_weights_and_the_kernel_isa_changes_them():
    here = numerics.weights({}, units=16, batch=64, models=("mlp", "lstm"))
    assert here == numerics.weights({}, units=16, batch=64, models=("mlp", "lstm"))
    assert set(here) == {"mlp", "lstm"} and all(len(h) == 10 for h in here.values())
    if "avx512f" in open("/proc/cpuinfo").read():   # AVX2 kernels sum in another order than AVX-512 ones
        capped = numerics.weights({"ONEDNN_MAX_CPU_ISA": "AVX2"}, units=16, batch=64, models=("mlp",))
        assert capped["mlp"] != here["mlp"]
