"""DVC stage `evaluate@<experiment>`: score the trained model on the test split.

    python -m pipelines.evaluate <experiment>

Writes `outputs/experiments/<experiment>/eval/`: `metrics.json` (`test_loss`,
`test_<headline>`, e.g. `test_accuracy` or `test_nrmse`: the same names for every
architecture on a task, and the task's baselines, e.g. `baseline_nrmse`),
`predictions.csv` (actual and predicted per test example) and the task's pictures in
`plots/` (a confusion matrix for classification, the forecast for forecasting, predicted
against actual for regression, exact match by question length for seq2seq, bits per
character by position and sampled text for a language model); logs them to the
experiment's MLflow run.
"""

from __future__ import annotations

import logging

import mlflow

from pipelines import config, runtime, stage, tasks

log = logging.getLogger("archlab.evaluate")
EVAL_BATCH = 256


def evaluate(name: str, params: config.Params) -> dict[str, float]:
    return score(stage.open_experiment(name, params), stage.trained_model(name))


def score(context: stage.Context, model) -> dict[str, float]:
    """Score `model` on the context's test split into `context.eval_dir`; the metrics."""
    name, splits, task = context.name, context.splits, context.task
    x_test, y_test = tasks.arrays(splits.test, task)
    results = model.evaluate(x_test, y_test, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
    outputs = task.predict(model, x_test)
    metrics = {f"test_{k}": float(v) for k, v in results.items() if k != "compile_metrics"}
    metrics[f"test_{task.headline}"] = task.score(outputs, y_test)
    metrics.update(task.details(outputs, y_test))
    metrics.update(task.baselines(x_test, y_test))
    metrics["test_examples"] = int(len(y_test))
    names = splits.class_names or splits.vocabulary

    with runtime.atomic_dir(context.eval_dir) as out:
        (out / "plots").mkdir()
        figures = task.plot(outputs, y_test, names, out / "plots", inputs=x_test)
        generated, more = task.generation(model, splits, x_test, y_test, out / "plots",
                                          config.hyperparameters(context.experiment))
        metrics.update(generated)
        figures += more
        task.table(outputs, y_test, names, inputs=x_test).to_csv(out / "predictions.csv", index=False)
        runtime.write_json(out / "metrics.json", metrics)
        with stage.mlflow_run(context, "evaluate"):
            mlflow.log_metrics(metrics)
            for figure in figures:   # pictures, and text (a language model's samples)
                mlflow.log_artifact(str(figure), "plots" if figure.suffix == ".png" else "text")
    log.info("%s: %s", name, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    stage.cli(evaluate, "Evaluate one experiment of params.yaml on its test split.")
