"""DVC stage `evaluate@<experiment>`: score the trained model on the test split.

    python -m pipelines.evaluate <experiment>

Writes `outputs/experiments/<experiment>/eval/`: `metrics.json` (`test_loss` and
`test_<headline>`, e.g. `test_accuracy`: the same names for every architecture on a
task) and the task's plots (a confusion matrix for classification); logs both to the
experiment's MLflow run.
"""

from __future__ import annotations

import argparse
import logging

import keras
import mlflow

from pipelines import config, datasets, paths, runtime, tasks, tracking

log = logging.getLogger("archlab.evaluate")
EVAL_BATCH = 256


def evaluate(name: str, params: config.Params) -> dict[str, float]:
    exp = config.experiment(params, name)
    runtime.setup(exp.seed)
    splits = datasets.load(exp.dataset, exp.training.validation_percent)
    task = tasks.get(splits.task)
    model_path = paths.train_dir(name) / "model.keras"
    if not model_path.exists():
        raise FileNotFoundError(f"no trained model at {model_path}; run `dvc repro train@{name}`")
    model = keras.models.load_model(model_path)
    x_test, y_test = tasks.arrays(splits.test, task)
    results = model.evaluate(x_test, y_test, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
    outputs = model.predict(x_test, batch_size=EVAL_BATCH, verbose=0)
    metrics = {f"test_{k}": float(v) for k, v in results.items() if k != "compile_metrics"}
    metrics[f"test_{task.headline}"] = task.score(outputs, y_test)
    metrics["test_examples"] = int(len(y_test))

    tags = tracking.run_tags(name, exp.architecture, exp.dataset, task.name, f"evaluate@{name}")
    with runtime.atomic_dir(paths.eval_dir(name)) as out:
        figures = task.plot(outputs, y_test, splits.class_names, out)
        task.table(outputs, y_test, splits.class_names).to_csv(out / "predictions.csv", index=False)
        runtime.write_json(out / "metrics.json", metrics)
        with tracking.start(paths.train_dir(name), mlflow_experiment=f"{task.name}/{exp.dataset}",
                            run_name=name, tags=tags):
            mlflow.log_metrics(metrics)
            for figure in figures:
                mlflow.log_artifact(str(figure), "plots")
    log.info("%s: %s", name, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description="Evaluate one experiment of params.yaml.")
    parser.add_argument("experiment")
    args = parser.parse_args()
    runtime.run_stage(lambda: evaluate(args.experiment, config.load()))


if __name__ == "__main__":
    main()
