"""DVC stage `report`: the leaderboard of every experiment, grouped by task.

    python -m pipelines.report

Reads each experiment's evaluate and export metrics; writes
`outputs/report/leaderboard.md`, `leaderboard.csv` and `leaderboard.png` (headline
metric, TFLite size, latency and parity per experiment) and logs them to the MLflow
experiment `leaderboard`. `summary.json`, the stage's DVC output, holds the figures
that repeat exactly (no timings).
"""

from __future__ import annotations

import json
import logging

import mlflow
import pandas as pd

from pipelines import anomaly, config, paths, plots, runtime, study, tasks, tracking

log = logging.getLogger("archlab.report")
NA = float("nan")


def _read(path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"missing {path}; run `dvc repro` for its experiment first")
    return json.loads(path.read_text())


def _timings(stage_dir) -> dict:
    """Wall-clock figures live outside DVC: absent when DVC restored the stage from its cache."""
    path = stage_dir / paths.TIMINGS
    if not path.exists():
        log.warning("no %s (outputs restored from the DVC cache); timings shown as n/a", path)
        return {}
    return json.loads(path.read_text())


# Task-specific evaluation figures shown beside the headline where an experiment has them.
EXTRA_COLUMNS = {"test_char_accuracy": "char accuracy", "test_exact_match_beam": "exact match (beam)",
                 "test_noisy_reconstruction_mse": "noisy MSE", "test_elbo": "ELBO",
                 "code_classifier_accuracy": "classifier on codes",
                 "pixel_classifier_accuracy": "classifier on pixels"}


def table(params: config.Params) -> pd.DataFrame:
    rows = []
    for name, exp in params.experiments.items():
        evaluation = _read(paths.eval_dir(name) / "metrics.json")
        exported = _read(paths.export_dir(name) / "metrics.json")
        trained = _read(paths.train_dir(name) / "metrics.json")
        task = tasks.get(config.task_name(exp))
        trained.update(_timings(paths.train_dir(name)))
        exported.update(_timings(paths.export_dir(name)))
        metric = f"test_{task.headline}"
        row = {"task": f"{task.name}/{exp.dataset}", "experiment": name,
               "architecture": exp.architecture, "metric": metric, "headline": evaluation[metric],
               "test_loss": evaluation.get("test_loss"), "parameters": trained["num_parameters"],
               "epochs": trained["epochs_run"], "train_seconds": trained.get("train_seconds", NA),
               "keras_latency_ms": exported.get("keras_latency_ms", NA),
               "higher_is_better": task.higher_is_better,
               "baseline": next((v for k, v in evaluation.items() if k.startswith("baseline_")), NA),
               "baseline_name": next((k for k in evaluation if k.startswith("baseline_")), ""),
               "free_run": evaluation.get(f"free_run_nrmse_{tasks.HORIZON}", NA),
               **{column: evaluation.get(key, NA) for key, column in EXTRA_COLUMNS.items()}}
        for variant in config.VARIANTS:
            prefix = f"tflite_{variant}"
            if f"{prefix}_size_bytes" in exported:
                row[f"{variant}_size_kb"] = exported[f"{prefix}_size_bytes"] / 1024
                row[f"{variant}_latency_ms"] = exported.get(f"{prefix}_latency_ms", NA)
                row[f"{variant}_max_abs_diff"] = exported[f"{prefix}_max_abs_diff"]
                row[f"{variant}_delta"] = exported[f"{prefix}_{task.headline}_delta"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    for variant in config.VARIANTS:
        for column in ("size_kb", "latency_ms", "max_abs_diff", "delta"):
            if f"{variant}_{column}" not in frame:
                frame[f"{variant}_{column}"] = float("nan")
    # Best first within each task: descending for accuracies, ascending for errors.
    frame["_rank"] = frame["headline"].where(~frame["higher_is_better"].astype(bool), -frame["headline"])
    return frame.sort_values(["task", "_rank"]).drop(columns="_rank").reset_index(drop=True)


def _fmt(spec: str):
    return lambda v: "n/a" if pd.isna(v) else spec.format(v)


def markdown(frame: pd.DataFrame) -> str:
    lines = ["# archlab leaderboard", ""]
    for task, group in frame.groupby("task", sort=True):
        metric = group["metric"].iloc[0]
        lines += [f"## {task}", ""]
        view = pd.DataFrame({
            "experiment": group["experiment"], "architecture": group["architecture"],
            metric: group["headline"].map("{:.4f}".format),
        })
        if group["baseline"].notna().any():
            view[group["baseline_name"].iloc[0]] = group["baseline"].map(_fmt("{:.4f}"))
        if group["free_run"].notna().any():
            view[f"free_run_nrmse_{tasks.HORIZON}"] = group["free_run"].map(_fmt("{:.4f}"))
        for column in EXTRA_COLUMNS.values():
            if column in group and group[column].notna().any():
                view[column] = group[column].map(_fmt("{:.4f}"))
        seconds = pd.to_numeric(group["train_seconds"], errors="coerce")
        view = view.assign(**{
            "params": group["parameters"],
            "epochs": group["epochs"].map(lambda e: "closed form" if e == 0 else str(e)),
            "train s": seconds.map(_fmt("{:.1f}")),
            "× fastest": (seconds / seconds.min()).map(_fmt("{:.1f}×")),
        })
        for variant in config.VARIANTS:
            if group[f"{variant}_size_kb"].notna().any():
                view[f"{variant} KiB"] = group[f"{variant}_size_kb"].map(_fmt("{:.1f}"))
                view[f"{variant} ms"] = group[f"{variant}_latency_ms"].map(_fmt("{:.3f}"))
                view[f"{variant} Δ"] = group[f"{variant}_delta"].map(_fmt("{:+.4f}"))
        view["float32 max abs diff"] = group["float32_max_abs_diff"].map("{:.1e}".format)
        lines += [view.to_markdown(index=False, disable_numparse=True), ""]
    lines += ["Sizes are TFLite file sizes; ms is the median single-sample latency with the "
              "LiteRT interpreter on this machine; Δ is the change of the test metric against "
              "the Keras model; max abs diff is the largest output difference of the float32 file. "
              "train s is the training wall time in this run and × fastest its ratio to the task's "
              "fastest; closed form: fitted without epochs (the echo state network's ridge readout). "
              f"free_run_nrmse_{tasks.HORIZON}: the error {tasks.HORIZON} steps into free-running "
              "generation (outputs fed back as inputs), over the test series' standard deviation. "
              "Seq2seq and language models export step models: their size is the encoder's and "
              "the one-step decoder's files together, ms is one decoder step, and max abs diff "
              "compares the decoder stepped over the test tokens with the Keras model; "
              "test_exact_match counts whole answers right with greedy decoding, test_bpc is bits "
              "per character on held-out text (lower is better). Autoencoders export an encoder "
              "and a decoder: their size is the two files together, ms one image through both; "
              "noisy MSE is the reconstruction error of the clean image from the test image with "
              "gaussian noise (σ 0.3) added; the classifiers are the same logistic regression on "
              "the encoder's codes and on the raw pixels (test accuracy).", ""]
    return "\n".join(lines)


# Reproducible columns: the DVC metrics file of the report (the leaderboard files also show
# timings, which differ per run, so they are kept out of DVC).
SUMMARY_COLUMNS = ["task", "architecture", "metric", "headline", "baseline", "parameters", "epochs",
                   *(f"{v}_{c}" for v in config.VARIANTS for c in ("size_kb", "max_abs_diff", "delta"))]


def summary(frame: pd.DataFrame) -> dict:
    """Per experiment, the figures that repeat exactly for the same seed."""
    doc = {}
    for row in frame.to_dict("records"):
        doc[row["experiment"]] = {c: row[c] for c in SUMMARY_COLUMNS if not pd.isna(row[c])}
    return doc


def study_section(params: config.Params) -> str:
    """The long-term dependency study's table and figure, if params.yaml has a study."""
    results = paths.STUDY / study.RESULTS
    if params.study is None or not results.exists():
        return ""
    return "\n".join(["", "## Long-term dependencies: the adding problem", "",
                      study.markdown(pd.read_csv(results)), "",
                      f"![test MSE against T](../study/{study.FIGURE})", ""])


def anomaly_section(params: config.Params) -> str:
    """The one-class anomaly detection table and figure, if params.yaml has the sweep."""
    results = paths.ANOMALY / anomaly.RESULTS
    if params.anomaly is None or not results.exists():
        return ""
    return "\n".join(["", "## One-class anomaly detection", "",
                      anomaly.markdown(pd.read_csv(results), params.anomaly.threshold_percentile), "",
                      f"![ROC-AUC per normal class](../anomaly/{anomaly.FIGURE})", ""])


def pictures_section(params: config.Params) -> str:
    """The autoencoders' pictures: reconstructions, denoising, latent maps, VAE samples."""
    lines = []
    for name, exp in params.experiments.items():
        if config.task_name(exp) != "reconstruction":
            continue
        pictures = sorted((paths.eval_dir(name) / "plots").glob("*.png"))
        lines += [f"### {name} ({exp.architecture})", "",
                  *(f"![{name} {p.stem}](../experiments/{name}/eval/plots/{p.name})" for p in pictures), ""]
    return "\n".join(["", "## Autoencoders: pictures", "", *lines]) if lines else ""


def report(params: config.Params) -> pd.DataFrame:
    frame = table(params)
    with runtime.atomic_dir(paths.REPORT) as out:
        runtime.write_json(out / "summary.json", summary(frame))
        frame.to_csv(out / "leaderboard.csv", index=False)
        (out / "leaderboard.md").write_text(markdown(frame) + study_section(params) + anomaly_section(params)
                                           + pictures_section(params))
        plots.leaderboard(frame, out / "leaderboard.png")
        tracking.configure()
        with mlflow.start_run(experiment_id=tracking.experiment_id("leaderboard"), run_name="report",
                              tags=tracking.run_tags("report", "all", "all", "all", "report")):
            for file in ("leaderboard.md", "leaderboard.csv", "leaderboard.png"):
                mlflow.log_artifact(str(out / file))
            if (paths.STUDY / study.FIGURE).exists() and params.study is not None:
                mlflow.log_artifact(str(paths.STUDY / study.FIGURE))
            if (paths.ANOMALY / anomaly.FIGURE).exists() and params.anomaly is not None:
                mlflow.log_artifact(str(paths.ANOMALY / anomaly.FIGURE))
    log.info("leaderboard of %d experiments in %s", len(frame), paths.REPORT)
    return frame


def main() -> None:
    runtime.run_stage(lambda: report(config.load()))


if __name__ == "__main__":
    main()
