"""The prepared GPU check (`pipelines/gpu_check.py`) runs under JAX with TensorFlow absent,
as on the lent GPU machine, and writes its figures; its wheel list is pinned by the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pipelines import gpu_check, paths


def test_the_gpu_check_runs_under_jax_without_tensorflow_and_writes_ratios(tmp_path):
    blocker = tmp_path / "blocked"
    (blocker / "tensorflow").mkdir(parents=True)
    (blocker / "tensorflow" / "__init__.py").write_text("raise ImportError('no TensorFlow on the GPU machine')\n")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": f"{blocker}:{paths.ROOT}"}
    result = subprocess.run([sys.executable, "-m", "pipelines.gpu_check", "--out", str(tmp_path / "out"),
                             "--seconds", "0.2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["machine"]["backend"] == "jax" and report["machine"]["devices"]
    assert sorted(report["results"]) == ["cnn", "lstm"]
    for rows in report["results"].values():
        assert list(rows) == list(gpu_check.SETTINGS)
        assert rows["float32"]["ratio"] == 1.0
        assert all(row["examples_per_second"] > 0 for row in rows.values())
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table.count("\n| cnn |") == table.count("\n| lstm |") == 4


def test_the_wheel_list_carries_the_locked_versions():
    commands = gpu_check.wheels()
    assert "keras==3.15.1" in commands and "pydantic==" in commands and "tensorflow" not in commands
    assert "KERAS_BACKEND=jax python -m pipelines.gpu_check" in commands


def test_the_data_is_learnable_by_class():
    x, y = gpu_check.data((28, 28, 1), 200)
    assert x.shape == (200, 28, 28, 1) and set(y) <= set(range(10))
    rows = x[:, :28 // 10 * 10, :, 0].reshape(200, 10, -1).mean(axis=2)
    assert (rows.argmax(axis=1) == y).all()
