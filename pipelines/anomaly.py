"""DVC stage `anomaly`: one-class anomaly detection by reconstruction error.

    python -m pipelines.anomaly

The one-class protocol (Ruff et al. 2018): for each class c of `anomaly.classes`, an
autoencoder is trained on the training images of class c alone, through the generic train
path; every test image is scored by its reconstruction error (mean squared error per pixel),
and the ROC-AUC measures how well that score separates the other classes (anomalies) from c.
`anomaly_roc_auc_mean` averages it over the classes.

A deployed detector also needs a threshold: the `threshold_percentile`-th percentile of the
reconstruction errors of the training images (normal by construction). Reported with it: the
false-positive rate it gives on the held-out normal images (the test images of class c) and
the share of anomalies it catches.

Writes `outputs/anomaly/`: `runs/<class>/train/` (as for any experiment), `results.csv`
(one row per class), `metrics.json`, `roc_auc.png` and `anomaly.md`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from pipelines import config, paths, runtime, stage, tracking, training
from pipelines.plots import plt, save

log = logging.getLogger("archlab.anomaly")
MLFLOW_EXPERIMENT = "one_class_anomaly"
RESULTS = "results.csv"
FIGURE = paths.ANOMALY_FIGURE
COLUMNS = ["class", "name", "roc_auc", "threshold", "false_positive_rate", "detection_rate", "train_images"]


def one_class(exp: config.Experiment, normal: int, root: Path, percentile: float, data_dir: Path | None = None) -> dict:
    """Train on class `normal` alone, score the whole test split; the class's row."""
    context = stage.context(f"class_{normal}", exp, root, data_dir=data_dir, mlflow_experiment=MLFLOW_EXPERIMENT)
    keep = lambda image, label: tf.equal(tf.cast(label, tf.int64), normal)  # noqa: E731
    splits = context.splits
    if splits.class_names and normal >= len(splits.class_names):
        raise runtime.StageError(f"anomaly.classes: {exp.dataset} has classes 0-{len(splits.class_names) - 1} "
                                 f"(got {normal})")
    context.splits.train, context.splits.validation = splits.train.filter(keep), splits.validation.filter(keep)
    trained = training.fit(context, resumable=False)
    model = keras.models.load_model(context.train_dir / "model.keras")
    task = context.task   # reconstruction: each image's error is its pixel MSE
    train_images, _ = task.labelled(splits.train)
    test_images, labels = task.labelled(splits.test)
    train_errors, test_errors = task.errors(model, train_images), task.errors(model, test_images)
    anomalous = labels != normal
    threshold = float(np.percentile(train_errors, percentile))
    names = splits.class_names
    scores = {"roc_auc": float(roc_auc_score(anomalous, test_errors)), "threshold": threshold,
              "false_positive_rate": float(np.mean(test_errors[~anomalous] > threshold)),
              "detection_rate": float(np.mean(test_errors[anomalous] > threshold))}
    with stage.mlflow_run(context, "anomaly"):
        mlflow.log_metrics(scores)
    return {"class": normal, "name": names[normal] if names else str(normal), **scores,
            "train_images": int(len(train_images)), "train_seconds": trained["train_seconds"]}


def run(params: config.Params, out_dir: Path | None = None, data_dir: Path | None = None) -> pd.DataFrame:
    """Every class's run (none without `anomaly` in params.yaml); the results, the figure
    and the table."""
    settings = config.anomaly(params)
    out_dir = out_dir or paths.ANOMALY
    with runtime.atomic_dir(out_dir) as out:
        (out / "runs").mkdir()
        rows = []
        if settings is not None:
            tracking.experiment_id(MLFLOW_EXPERIMENT)
            exp = settings.experiment()
            rows = [one_class(exp, c, out / "runs" / f"class_{c}", settings.threshold_percentile, data_dir)
                    for c in settings.classes]
        results = pd.DataFrame(rows, columns=[*COLUMNS, "train_seconds"])
        results[COLUMNS].to_csv(out / RESULTS, index=False)
        mean = float(results["roc_auc"].mean()) if rows else float("nan")
        runtime.write_json(out / "metrics.json", {
            "classes": len(rows), **({"anomaly_roc_auc_mean": mean} if rows else {}),
            **{f"roc_auc_{r['class']}": r["roc_auc"] for r in rows}})
        runtime.write_json(out / paths.TIMINGS, {"train_seconds": {str(r["class"]): r["train_seconds"] for r in rows}})
        (out / "anomaly.md").write_text((markdown(results, settings.threshold_percentile) if rows else
                                         "No one-class anomaly detection in params.yaml (`anomaly`).") + "\n")
        roc_auc_per_class(results, out / FIGURE)
    log.info("one-class anomaly detection: mean ROC-AUC %.4f over %d classes", mean, len(rows))
    return results


def roc_auc_per_class(results: pd.DataFrame, path: Path) -> None:
    """One-class anomaly detection: ROC-AUC with each class as the normal one."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if len(results):
        bars = ax.bar(results["name"].astype(str), results["roc_auc"].astype(float))
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in results["roc_auc"]], fontsize=7)
        ax.axhline(results["roc_auc"].mean(), color="black", lw=0.8, ls="--",
                   label=f"mean {results['roc_auc'].mean():.3f}")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance 0.5")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("ROC-AUC (normal class vs the rest)")
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(loc="lower right", fontsize=8)
    save(fig, path)


def markdown(results: pd.DataFrame, percentile: float) -> str:
    view = results[COLUMNS].copy()
    for column in ("roc_auc", "false_positive_rate", "detection_rate"):
        view[column] = view[column].map("{:.4f}".format)
    view["threshold"] = view["threshold"].map("{:.5f}".format)
    return "\n".join([
        f"One-class anomaly detection: mean ROC-AUC {results['roc_auc'].mean():.4f} over "
        f"{len(results)} classes. Threshold: the {percentile:g}th percentile of the training "
        "images' reconstruction errors; false_positive_rate on the held-out normal (test) images "
        "of the class, detection_rate on the other classes' test images.", "",
        view.to_markdown(index=False, disable_numparse=True)])


def main() -> None:
    runtime.run_stage(lambda: run(config.load()), backend="tensorflow")


if __name__ == "__main__":
    main()
