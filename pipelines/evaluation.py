"""The one evaluation path of every architecture (the `evaluate` stage and the study).

Scores a trained model on the test split: `test_loss` and the Keras metrics, the task's
headline `test_<headline>` (the same name for every architecture on a task), its details
and baselines, the scores that need the model (`Task.extra`, with the experiment's
`evaluation` settings) and the architecture's own (`Architecture.evaluate`: a VAE's ELBO
and samples). Writes `metrics.json`, `predictions.csv` and the pictures in `plots/`, and
logs them to the experiment's MLflow run.
"""

from __future__ import annotations

import logging

import mlflow

import models
from pipelines import plots, runtime, stage

log = logging.getLogger("archlab.evaluate")
EVAL_BATCH = 256


def score(context: stage.Context, model) -> dict[str, float]:
    """Score `model` on the context's test split into `context.eval_dir`; the metrics."""
    name, splits, task = context.name, context.splits, context.task
    settings = context.evaluation
    x_test, y_test = task.arrays(splits.test)
    results = model.evaluate(x_test, y_test, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
    outputs = task.predict(model, x_test)
    metrics = {f"test_{k}": float(v) for k, v in results.items() if k != "compile_metrics"}
    metrics[f"test_{task.headline}"] = task.score(outputs, y_test)
    metrics.update(task.details(outputs, y_test))
    metrics.update(task.baselines(x_test, y_test))
    metrics["test_examples"] = int(len(y_test))
    names = splits.class_names or splits.vocabulary
    arch = models.get(context.experiment.architecture)

    with runtime.atomic_dir(context.eval_dir) as out:
        (out / "plots").mkdir()
        figures = task.plot(outputs, y_test, names, out / "plots", inputs=x_test)
        extra, files = task.extra(model, splits, x_test, y_test, out / "plots", settings)
        metrics.update(extra)
        figures += files
        if arch.evaluate is not None:   # the architecture's own scores and pictures
            own, pictures = arch.evaluate(model, x_test)
            metrics.update(own)
            for stem, rows in pictures.items():
                figures.append(out / "plots" / f"{stem}.png")
                plots.image_rows(rows, figures[-1])
        task.table(outputs, y_test, names, inputs=x_test).to_csv(out / "predictions.csv", index=False)
        runtime.write_json(out / "metrics.json", metrics)
        with stage.mlflow_run(context, "evaluate"):
            mlflow.log_metrics(metrics)
            for figure in figures:   # pictures, and text (a language model's samples)
                mlflow.log_artifact(str(figure), "plots" if figure.suffix == ".png" else "text")
    log.info("%s: %s", name, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics
