"""DVC stage `export@<experiment>`: TFLite files checked against the Keras model.

    python -m pipelines.export <experiment>

The task's export strategy (`Task.exporter`, `pipelines/exporters/`) writes each variant of
`export.variants` (float32, the parity reference; dynamic_range; float16; int8) into
`export/tflite/`, and every file is run with the LiteRT interpreter through the edge
runner (`edge/runner.py`, what a device runs) on the test split. Recorded per variant in
`export/metrics.json`: `tflite_<variant>_size_bytes`, `tflite_<variant>_max_abs_diff`
(against the Keras outputs), `tflite_<variant>_<headline>_delta` (the headline metric's
change) and, for generated tokens, `tflite_<variant>_greedy_agreement` (the share of test
examples whose greedy output equals Keras's); for a forecaster's step model (`<variant>_step.tflite`,
`pipelines/exporters/stream.py`) `tflite_<variant>_step_size_bytes`, `_step_max_abs_diff` (over
the whole test series, the state carried) and `_step_nrmse_delta`; the latencies (`keras_latency_ms`,
`tflite_<variant>_latency_ms`: median single-sample; `keras_step_latency_ms`,
`tflite_<variant>_step_latency_ms`: one point), which differ per machine, in
`export/timings.json` (outside DVC). The stage fails, writing nothing, if a file contains a
Flex (select TF) op, or the float32 files differ from Keras by more than
`export.float32_tolerance` (1e-4) or disagree with its greedy outputs on any example.
"""

from __future__ import annotations

import logging

import mlflow
import numpy as np

from pipelines import config, paths, runtime, stage
from pipelines.exporters import tflite
from pipelines.runtime import StageError

log = logging.getLogger("archlab.export")


def check_agreement(variant: str, outputs: np.ndarray, expected: np.ndarray) -> float:
    """The share of examples whose generated tokens equal Keras's; the float32 files must
    agree on every one."""
    agree = np.all(outputs == expected, axis=1)
    if variant == "float32" and not agree.all():
        raise StageError(f"float32 TFLite greedy outputs differ from Keras's on {int(np.sum(~agree))} "
                         f"of {len(outputs)} examples")
    return float(np.mean(agree))


def export(name: str, params: config.Params) -> dict[str, float]:
    context = stage.open_experiment(name, params)
    exp, splits, task = context.experiment, context.splits, context.task
    settings = exp.export
    model = stage.trained_model(name, float32=True)   # a mixed-precision model converts in float32
    edge = task.exporter()(model, exp, task, splits, settings.variants)
    representative, _ = task.arrays(splits.train, limit=settings.representative_examples)
    x_test, y_test = task.arrays(splits.test, limit=settings.parity_examples)
    expected = task.predict(model, x_test)                       # the task's outputs from Keras
    reference = task.parity_reference(model, x_test, expected)   # what the files must compute
    reference_score = task.score(expected, y_test)
    metrics: dict[str, float] = {f"keras_{task.headline}": reference_score, "parity_examples": int(len(y_test))}
    timings = {"keras_latency_ms": edge.keras_latency_ms(x_test, settings.latency_runs)}
    spec = edge.spec() if hasattr(edge, "spec") else None
    if spec is not None:
        timings["keras_step_latency_ms"] = edge.keras_step_latency_ms(settings.latency_runs)
    with runtime.atomic_dir(paths.export_dir(name)) as out:
        (out / "tflite").mkdir()
        if spec is not None:
            runtime.write_json(out / "tflite" / "stream.json", spec)
        for variant in settings.variants:
            files = edge.write(variant, out / "tflite", representative)
            outputs, diff = edge.run(files, x_test, reference, f"{name} {variant}")
            tflite.check_parity(variant, diff, settings.float32_tolerance)
            prefix = f"tflite_{variant}"
            if np.issubdtype(expected.dtype, np.integer):   # generated tokens (seq2seq)
                metrics[f"{prefix}_greedy_agreement"] = check_agreement(variant, outputs, expected)
            metrics[f"{prefix}_size_bytes"] = sum(f.stat().st_size for f in files)
            step = edge.one_step(files, x_test)
            timings[f"{prefix}_latency_ms"] = tflite.median_latency_ms(lambda _, step=step: step(), None,
                                                                       settings.latency_runs)
            metrics[f"{prefix}_max_abs_diff"] = diff
            metrics[f"{prefix}_{task.headline}_delta"] = task.score(outputs, y_test) - reference_score
            log.info("%s %s: %d bytes, %.3f ms, max |diff| %.2e, %s delta %+.4f", name, variant,
                     metrics[f"{prefix}_size_bytes"], timings[f"{prefix}_latency_ms"], diff,
                     task.headline, metrics[f"{prefix}_{task.headline}_delta"])
            if spec is not None:   # a forecaster's step model beside its window model
                step_metrics, step_timings = edge.extras(out / "tflite", variant, settings,
                                                          f"{name} {variant}")
                metrics.update(step_metrics)
                timings.update(step_timings)
        if splits.class_names:
            (out / "tflite" / "labels.txt").write_text("\n".join(splits.class_names) + "\n")
        if task.tokens:
            runtime.write_json(out / "tflite" / "generation.json", task.edge_spec(splits.vocabulary, x_test))
        runtime.write_json(out / "metrics.json", metrics)
        runtime.write_json(out / paths.TIMINGS, timings)
        with stage.mlflow_run(context, "export") as run:
            mlflow.log_metrics({**metrics, **timings})
            mlflow.log_artifacts(str(out / "tflite"), "tflite")
            for logged in mlflow.search_logged_models(output_format="list", experiment_ids=[run.info.experiment_id],
                                                      filter_string=f"source_run_id = '{run.info.run_id}'"):
                # the registered model (the report's champion) carries its TFLite files
                mlflow.MlflowClient().log_model_artifacts(logged.model_id, str(out / "tflite"), "tflite")
    return {**metrics, **timings}


if __name__ == "__main__":
    stage.cli(export, "Export one experiment of params.yaml to TFLite, checked against Keras.")
