"""Benchmarks (`make bench`): figures measured side by side in one run, reported as ratios.

- Inference: for every exported experiment, the median single-sample latency of the
  Keras model and of each TFLite variant on the LiteRT interpreter, measured here in
  turn on the same inputs, and each variant's speed-up over Keras.
- Pipeline: the wall time of a no-op `dvc repro` (everything up to date) and of
  `dvc status`.

Nothing is asserted: these machines are shared and noisy, so the figures are printed
(and written to `outputs/bench.md`) for people to compare.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import time

import keras
import pandas as pd

from edge.runner import TFLiteModel
from pipelines import config, datasets, export, paths, runtime, tasks

log = logging.getLogger("archlab.bench")
RUNS = 300


def inference(params: config.Params) -> pd.DataFrame:
    rows = []
    for name, exp in params.experiments.items():
        files = paths.export_dir(name) / "tflite"
        if not (paths.train_dir(name) / "model.keras").exists() or not files.exists():
            log.info("%s: not trained and exported yet, skipped", name)
            continue
        splits = datasets.load(exp.dataset, exp.training.validation_percent)
        task = tasks.get(splits.task)
        x, _ = tasks.arrays(splits.test, task, limit=1)
        model = export.fixed_batch_copy(keras.models.load_model(paths.train_dir(name) / "model.keras"),
                                        exp, task.head(splits))
        keras_ms = export.median_latency_ms(lambda v: model(v[None], training=False), x[0], RUNS)
        row = {"experiment": name, "keras ms": keras_ms}
        for variant in exp.export.variants:
            tflite = TFLiteModel(files / f"{variant}.tflite")
            ms = export.median_latency_ms(tflite.predict_one, x[0], RUNS)
            row[f"{variant} ms"] = ms
            row[f"{variant} speed-up"] = keras_ms / ms
        rows.append(row)
    return pd.DataFrame(rows)


def wall_seconds(*cmd: str, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, cwd=paths.ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    params = config.load()
    runtime.setup(0)
    table = inference(params)
    pipeline = pd.DataFrame([{"command": "dvc repro (nothing to do)", "median s": wall_seconds("dvc", "repro")},
                             {"command": "dvc status", "median s": wall_seconds("dvc", "status")}])
    text = "\n\n".join(["## Single-sample inference latency (median of %d runs)" % RUNS,
                        table.to_markdown(index=False, floatfmt=".3f") if len(table) else "(nothing exported)",
                        "## Pipeline", pipeline.to_markdown(index=False, floatfmt=".2f")]) + "\n"
    paths.OUTPUTS.mkdir(exist_ok=True)
    (paths.OUTPUTS / "bench.md").write_text(text)
    print(text)


if __name__ == "__main__":
    runtime.run_stage(main)
