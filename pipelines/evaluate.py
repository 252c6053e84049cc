"""DVC stage `evaluate@<experiment>`: score the trained model on the test split.

    python -m pipelines.evaluate <experiment>

Writes `outputs/experiments/<experiment>/eval/`: `metrics.json` (`test_loss` and
`test_<headline>`, e.g. `test_accuracy`: the same names for every architecture on a
task) and the task's plots (a confusion matrix for classification); logs both to the
experiment's MLflow run.
"""

from __future__ import annotations

import logging

import mlflow

from pipelines import config, paths, runtime, stage, tasks

log = logging.getLogger("archlab.evaluate")
EVAL_BATCH = 256


def evaluate(name: str, params: config.Params) -> dict[str, float]:
    context = stage.open_experiment(name, params)
    splits, task = context.splits, context.task
    model = stage.trained_model(name)
    x_test, y_test = tasks.arrays(splits.test, task)
    results = model.evaluate(x_test, y_test, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
    outputs = model.predict(x_test, batch_size=EVAL_BATCH, verbose=0)
    metrics = {f"test_{k}": float(v) for k, v in results.items() if k != "compile_metrics"}
    metrics[f"test_{task.headline}"] = task.score(outputs, y_test)
    metrics["test_examples"] = int(len(y_test))

    with runtime.atomic_dir(paths.eval_dir(name)) as out:
        figures = task.plot(outputs, y_test, splits.class_names, out)
        task.table(outputs, y_test, splits.class_names).to_csv(out / "predictions.csv", index=False)
        runtime.write_json(out / "metrics.json", metrics)
        with stage.mlflow_run(context, "evaluate"):
            mlflow.log_metrics(metrics)
            for figure in figures:
                mlflow.log_artifact(str(figure), "plots")
    log.info("%s: %s", name, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    stage.cli(evaluate, "Evaluate one experiment of params.yaml on its test split.")
