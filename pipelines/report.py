"""DVC stage `report`: the leaderboard of every experiment, grouped by task.

    python -m pipelines.report

Reads each experiment's evaluate and export metrics; writes
`outputs/report/leaderboard.md`, `leaderboard.csv` and `leaderboard.png` (headline
metric, TFLite size, latency and parity per experiment; forecasters streamed beside
windowed, with the per-point latency of their step and window models; `accuracy_by_depth.png` where
experiments score trees by depth) and logs them to the MLflow
experiment `leaderboard`. `summary.json`, the stage's DVC metrics, holds the figures
that repeat exactly (no timings); `machines.json` names the machine that trained each
experiment. Both are kept in git. Each task's best experiment is registered in the MLflow
model registry with the alias `champion`; when the tracking store holds runs from more than
one machine, the leaderboard ends with them side by side (`pipelines.compare`: the store as
it is when the report runs, not a DVC dependency; `make compare` for the current view).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

import models
from pipelines import compare, config, paths, runtime, tasks, tracking
from pipelines.plots import plt, save

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
                 "pixel_classifier_accuracy": "classifier on pixels", "deep_accuracy": "deeper trees"}


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
               "epochs": trained["epochs_run"],
               "closed_form": not models.get(exp.architecture).trains_by_gradient(config.hyperparameters(exp)),
               "train_seconds": trained.get("train_seconds", NA),
               "keras_latency_ms": exported.get("keras_latency_ms", NA),
               "higher_is_better": task.higher_is_better,
               "baseline": next((v for k, v in evaluation.items() if k.startswith("baseline_")), NA),
               "baseline_name": next((k for k in evaluation if k.startswith("baseline_")), ""),
               "free_run": next((v for k, v in evaluation.items() if k.startswith("free_run_nrmse_")), NA),
               "free_run_name": next((k for k in evaluation if k.startswith("free_run_nrmse_")), ""),
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
            view[group["free_run_name"].dropna().iloc[0]] = group["free_run"].map(_fmt("{:.4f}"))
        for column in EXTRA_COLUMNS.values():
            if column in group and group[column].notna().any():
                view[column] = group[column].map(_fmt("{:.4f}"))
        seconds = pd.to_numeric(group["train_seconds"], errors="coerce")
        view = view.assign(**{
            "params": group["parameters"],
            "epochs": [("closed form" if closed else str(e))
                       for e, closed in zip(group["epochs"], group["closed_form"])],
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
              "free_run_nrmse_<h>: the error h steps into free-running "
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


def leaderboard(table: pd.DataFrame, path: Path) -> None:
    """Per task, one bar per experiment: headline metric, TFLite sizes, latency and parity."""
    groups = list(table.groupby("task", sort=True))
    columns = [("headline", None), ("float32_size_kb", "float32 .tflite (KiB)"),
               ("int8_size_kb", "int8 .tflite (KiB)"), ("float32_latency_ms", "float32 latency (ms)"),
               ("float32_max_abs_diff", "float32 parity: max abs diff"), ("int8_delta", "int8 metric change")]
    per_row = 3
    rows_per_task = -(-len(columns) // per_row)
    bar_height = 0.45 * max(len(g) for _, g in groups) + 1.4
    fig, axes = plt.subplots(rows_per_task * len(groups), per_row, squeeze=False,
                             figsize=(4.4 * per_row, bar_height * rows_per_task * len(groups)))
    for t, (task, group) in enumerate(groups):
        for i, (column, label) in enumerate(columns):
            ax = axes[t * rows_per_task + i // per_row][i % per_row]
            values = group[column].astype(float)
            ax.barh(group["experiment"], values, color="tab:green" if column == "headline" else "tab:blue")
            for y, v in enumerate(values):
                if np.isfinite(v):
                    ax.text(v, y, f" {v:.4g}", va="center", fontsize=8)
            ax.set_title(f"{task}: {label or group['metric'].iloc[0]}", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
            ax.invert_yaxis()
            if column == "headline" and len(values.dropna()):
                low = values.min()
                ax.set_xlim(max(0.0, low - (values.max() - low) - 0.02), min(1.0, values.max() + 0.03)
                            if values.max() <= 1 else None)
            if column in ("float32_max_abs_diff", "int8_delta"):
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
        for j in range(len(columns), rows_per_task * per_row):
            axes[t * rows_per_task + j // per_row][j % per_row].axis("off")
    save(fig, path)


def summary(frame: pd.DataFrame) -> dict:
    """Per experiment, the figures that repeat exactly for the same seed."""
    doc = {}
    for row in frame.to_dict("records"):
        doc[row["experiment"]] = {c: row[c] for c in SUMMARY_COLUMNS if not pd.isna(row[c])}
    return doc


def sweep_section(title: str, folder, table: str, figure: str, caption: str) -> str:
    """A sweep's table (the markdown its stage wrote) and figure, if it ran."""
    if not (folder / table).exists():
        return ""
    return "\n".join(["", f"## {title}", "", (folder / table).read_text().strip(), "",
                      f"![{caption}](../{folder.name}/{figure})", ""])


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


def stream_section(params: config.Params) -> str:
    """Forecasters streamed beside windowed: each score from a window read from a zero state
    and from the step model's carried state, and the per-point LiteRT latency of both."""
    rows, pictures = [], []
    for name, exp in params.experiments.items():
        evaluation = _read(paths.eval_dir(name) / "metrics.json")
        if "test_nrmse_stream" not in evaluation:
            continue
        exported = {**_read(paths.export_dir(name) / "metrics.json"), **_timings(paths.export_dir(name))}
        row = {"experiment": name, "architecture": exp.architecture, "dataset": exp.dataset,
               "test_nrmse": evaluation["test_nrmse"], "test_nrmse stream": evaluation["test_nrmse_stream"]}
        for key in sorted(k for k in evaluation if k.startswith("free_run_") and k.endswith("_stream")):
            windowed = key[:-len("_stream")]
            row[windowed], row[f"{windowed} stream"] = evaluation.get(windowed, NA), evaluation[key]
        window_ms = exported.get("tflite_float32_latency_ms", NA)
        step_ms = exported.get("tflite_float32_step_latency_ms", NA)
        row.update({"window ms": window_ms, "step ms": step_ms, "window / step": window_ms / step_ms,
                    "step max abs diff": exported.get("tflite_float32_step_max_abs_diff", NA)})
        rows.append(row)
        picture = paths.eval_dir(name) / "plots" / "free_run.png"
        if picture.exists():
            pictures.append(f"![{name} free run](../experiments/{name}/eval/plots/free_run.png)")
    if not rows:
        return ""
    frame = pd.DataFrame(rows)
    view = frame.apply(lambda column: column.map(_fmt("{:.3g}")) if column.dtype.kind == "f" else column)
    return "\n".join(["", "## Forecasters streamed: windows against the carried state", "",
                      view.to_markdown(index=False, disable_numparse=True), "",
                      "Each score twice: from a window of the series read from a zero state (what the "
                      "window model computes), and `stream`, by the step model with its state carried "
                      "through the series (warmed up on the end of the training series), on the same "
                      "targets. ms: the median LiteRT latency of one forecast on this machine, the "
                      "window model reading W points against the step model reading one (float32); "
                      "step max abs diff: the float32 step file against the Keras step model over the "
                      "whole test series, the state carried. Free runs from windows (dashed) and from "
                      "the carried state (dotted):", "", *pictures, ""])


def depth_section(params: config.Params, out: Path) -> str:
    """Accuracy by tree depth (the tree task's `depth_<d>_accuracy`), one row per experiment
    and one line each in `accuracy_by_depth.png`, per task and dataset."""
    groups: dict[str, dict[str, dict[int, float]]] = {}
    for name, exp in params.experiments.items():
        evaluation = _read(paths.eval_dir(name) / "metrics.json")
        by_depth = {int(k.split("_")[1]): v for k, v in evaluation.items()
                    if k.startswith("depth_") and k.endswith("_accuracy")}
        if by_depth:
            groups.setdefault(f"{config.task_name(exp)}/{exp.dataset}", {})[name] = by_depth
    if not groups:
        return ""
    lines = ["", "## Accuracy by tree depth", ""]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4), squeeze=False)
    for ax, (task, runs) in zip(axes[0], sorted(groups.items())):
        frame = pd.DataFrame(runs).T.sort_index(axis=1)
        lines += [f"### {task}", "", frame.map("{:.4f}".format).rename(columns=lambda d: f"depth {d}")
                  .rename_axis("experiment").to_markdown(disable_numparse=True), ""]
        for experiment, row in frame.iterrows():
            architecture = params.experiments[experiment].architecture
            ax.plot(row.index, row.values, marker="o", label=f"{experiment} ({architecture})")
        ax.set_xlabel("tree depth")
        ax.set_ylabel("test accuracy")
        ax.set_title(task, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, out / DEPTH_FIGURE)
    lines += ["Depths past the training trees' are the `deep` split's (depth extrapolation).", "",
              f"![accuracy by tree depth]({DEPTH_FIGURE})", ""]
    return "\n".join(lines)


DEPTH_FIGURE = "accuracy_by_depth.png"


def unfold_section(params: config.Params) -> str:
    """The unfolded graphs (`pipelines.unfold`): the figures and what they measured."""
    if params.unfold is None or not (paths.UNFOLD / "metrics.json").exists():
        return ""
    found = json.loads((paths.UNFOLD / "metrics.json").read_text())
    rec, tree = found["recurrent"], found["tree"]
    counts = ", ".join(f"T={t}: {n}" for t, n in rec["unrolled_operators_by_steps"].items())
    return "\n".join([
        "", "## Unfolding computational graphs", "",
        f"`{rec['experiment']}` ({rec['architecture']}) over T = {rec['steps']} steps: rolled, its TFLite file "
        f"has {rec['rolled_operators']} operators (a WHILE and its subgraphs); unrolled, {counts} operators. "
        f"Unrolled against rolled: max abs diff {rec['keras_max_abs_diff']:.1e} (Keras), "
        f"{rec['tflite_unrolled_max_abs_diff']:.1e} (the unrolled TFLite file). Weight tensors read by "
        f"{', '.join(map(str, rec['unrolled_weight_readers']))} operators each.", "",
        *(f"![{p}](../unfold/{p})" for p in ("rolled.png", "unrolled.png")), "",
        f"`{tree['experiment']}` ({tree['architecture']}) unfolded over `{tree['example']}` (depth {tree['depth']}, "
        f"{tree['nodes']} nodes, value {tree['label']}): {tree['operators']} operators; against the tree model, "
        f"max abs diff {tree['keras_max_abs_diff']:.1e} (Keras), {tree['tflite_max_abs_diff']:.1e} (TFLite).", "",
        "![tree.png](../unfold/tree.png)", ""])




# What machines.json says of each experiment's machine (the rest is in its MLflow run).
MACHINE_FIELDS = ("machine_id", "hardware_id", "host", "cpu", "cpu_model_id", "cpu_caches", "cpu_isa", "cpu_count",
                  "gpu", "tensorflow_version",
                  "keras_backend", "onednn")


def machines(params: config.Params) -> dict:
    """Which machine trained each experiment (its train stage's `machine.json`): committed
    with the results, so a clone knows where the committed figures come from."""
    kept = paths.REPORT / "machines.json"   # what a pulled or restored model was trained on
    before = json.loads(kept.read_text()) if kept.exists() else {}
    doc = {}
    for name in params.experiments:
        path = paths.train_dir(name) / paths.MACHINE   # outside DVC: absent after a pull or a cache restore
        found = json.loads(path.read_text()) if path.exists() else {}
        doc[name] = {k: found[k] for k in MACHINE_FIELDS if k in found} or before.get(name) or {"machine_id": "unknown"}
    return doc


CHAMPION = "champion"


def registered_name(task: str) -> str:
    """The model registry's name for a task and dataset (`image_classification/fashion_mnist`
    → `image_classification.fashion_mnist`)."""
    return task.replace("/", ".")


def register_champions(frame: pd.DataFrame) -> dict[str, str]:
    """Register each task's best experiment (the leaderboard's first row) in the MLflow model
    registry under the alias `champion`: its logged Keras model (with its TFLite files, which
    the export stage adds to it), tagged with its headline metric and its run's TFLite folder.
    The alias moves only to a better model (on a shared server, another machine's report may
    have registered a better one); the same model keeps its version. Returns task → experiment."""
    client = mlflow.MlflowClient()
    champions = {}
    for task, group in frame.groupby("task", sort=True):
        best = group.iloc[0]
        record = paths.train_dir(best["experiment"]) / tracking.RUN_FILE
        if not record.exists():
            log.warning("%s: no MLflow run recorded (outputs restored from the DVC cache); not registered", task)
            continue
        run = json.loads(record.read_text())
        found = mlflow.search_logged_models(experiment_ids=[run["experiment_id"]], output_format="list",
                                            filter_string=f"source_run_id = '{run['run_id']}'")
        if not found:
            log.warning("%s: run %s has no logged model; not registered", task, run["run_id"])
            continue
        name = registered_name(task)
        try:
            current = client.get_model_version_by_alias(name, CHAMPION)
        except mlflow.exceptions.MlflowException:
            current = None
        same = current is not None and (current.model_id or current.source) in (found[0].model_id,
                                                                                found[0].model_uri)
        better = current is None or _better(best, current.tags.get(best["metric"]))
        if not same and better:
            version = mlflow.register_model(found[0].model_uri, name)
            tags = {"archlab_experiment": best["experiment"], "architecture": best["architecture"],
                    best["metric"]: f"{best['headline']:.6g}", "tflite": f"runs:/{run['run_id']}/tflite"}
            for key, value in tags.items():
                client.set_model_version_tag(name, version.version, key, value)
            client.set_registered_model_alias(name, CHAMPION, version.version)
        champions[task] = best["experiment"]
    return champions


def _better(row, champion: str | None) -> bool:
    if champion is None:
        return True
    return row["headline"] > float(champion) if row["higher_is_better"] else row["headline"] < float(champion)


def machines_section() -> str:
    """The runs in the tracking store, machine by machine (`pipelines.compare`), when the
    store holds runs from more than one machine."""
    try:
        comparison = compare.compare(mlflow.MlflowClient())
    except runtime.StageError as e:   # no archlab runs yet
        log.info("no per-machine view: %s", e)
        return ""
    if len(comparison.machines) < 2:
        return ""
    body = compare.markdown(comparison).split("\n", 1)[1]   # its own title dropped
    return "\n".join(["", "## Machines side by side (the MLflow store, `make compare`)", "",
                      body.replace("\n## ", "\n### ").strip(), ""])


def report(params: config.Params) -> pd.DataFrame:
    frame = table(params)
    tracking.configure()
    with runtime.atomic_dir(paths.REPORT) as out:
        runtime.write_json(out / "summary.json", summary(frame))
        runtime.write_json(out / "machines.json", machines(params))
        frame.to_csv(out / "leaderboard.csv", index=False)
        study = sweep_section("Long-term dependencies: the adding problem", paths.STUDY, "study.md",
                              paths.STUDY_FIGURE, "test MSE against T") if params.study else ""
        anomaly = sweep_section("One-class anomaly detection", paths.ANOMALY, "anomaly.md", paths.ANOMALY_FIGURE,
                                "ROC-AUC per normal class") if params.anomaly else ""
        (out / "leaderboard.md").write_text(markdown(frame) + stream_section(params) + depth_section(params, out)
                                            + study + anomaly
                                            + unfold_section(params) + pictures_section(params) + machines_section())
        leaderboard(frame, out / "leaderboard.png")
        register_champions(frame)
        with mlflow.start_run(experiment_id=tracking.experiment_id("leaderboard"), run_name="report",
                              tags=tracking.run_tags("report", "all", "all", "all", "report")):
            for file in ("leaderboard.md", "leaderboard.csv", "leaderboard.png", DEPTH_FIGURE):
                if (out / file).exists():
                    mlflow.log_artifact(str(out / file))
            for figure, section in ((paths.STUDY / paths.STUDY_FIGURE, params.study),
                                    (paths.ANOMALY / paths.ANOMALY_FIGURE, params.anomaly)):
                if section is not None and figure.exists():
                    mlflow.log_artifact(str(figure))
    log.info("leaderboard of %d experiments in %s", len(frame), paths.REPORT)
    return frame


def main() -> None:
    runtime.run_stage(lambda: report(config.load()))


if __name__ == "__main__":
    main()
