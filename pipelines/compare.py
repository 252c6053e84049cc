"""Machines side by side (`make compare`): the same experiment, code, params and data, run on
different machines, from the runs in the MLflow tracking store.

    python -m pipelines.compare [--reference MACHINE] [--tracking-uri URI] [--out DIR] [--no-log]

A run counts when it is FINISHED, carries the tags `archlab_experiment` and `machine_id`, and
has the metric its `headline_metric` tag names (the leaderboard's, sweeps' and this tool's own
runs do not). Then:

- The reference machine is `--reference` (a machine_id or a host name), else the machine with
  the most runs (tie: the first host alphabetically).
- A group is the runs of one archlab experiment with the same `params_hash`, `data_hash` and
  `git_commit`; from each machine in a group only its latest run is shown.
- Per experiment, the reference machine's latest run picks the group laid side by side: each
  machine's headline metric and its difference to the reference machine's, and its train
  time, throughput and Keras and TFLite float32 latency as ratios to the reference machine's.
- Every other group's latest run on each machine is listed as not comparable, with which of
  the three differs (both values, short); so are the experiments the reference machine has no
  run of. Nothing is compared across different code, params or data.

Writes `machines.md` (a table per task, the not-comparable runs, the machines),
`machines.json` (the same figures) and `machines.png` (per task, the headline metric and the
train-time ratio by experiment and machine) to `--out` (default `outputs/compare`), and logs
them to a run in the MLflow experiment `machines` unless `--no-log`. `view()` gives the
side-by-side rows to other code (the report).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import ViewType

from pipelines import config, paths, runtime, tracking
from pipelines.plots import plt, save
from pipelines.runtime import StageError

log = logging.getLogger("archlab.compare")
OUT = paths.OUTPUTS / "compare"
MLFLOW_EXPERIMENT = "machines"
FILES = ("machines.md", "machines.json", "machines.png")
IDENTITY = ("params_hash", "data_hash", "git_commit")    # what must match for runs to be compared
SHORT = {"git_commit": 7, "params_hash": 8, "data_hash": 8}
MACHINE_TAGS = ("host", "cpu", "cpu_isa", "cpu_count", "memory_gb", "gpu", "gpu_count", "tensorflow_version",
                "keras_backend", "precision", "xla", "onednn", "devices", "git_dirty")
METRICS = ("train_seconds", "seconds_per_epoch", "train_examples_per_second", "peak_memory_mb", "keras_latency_ms",
           *(f"tflite_{variant}_latency_ms" for variant in config.VARIANTS))
# ratio column: its metric, as this machine's value over the reference machine's
RATIOS = {"train_ratio": "train_seconds", "throughput_ratio": "train_examples_per_second",
          **{f"tflite_{variant}_ratio": f"tflite_{variant}_latency_ms" for variant in config.VARIANTS},
          "keras_ratio": "keras_latency_ms"}
PAGE = 1000


@dataclass(frozen=True)
class Comparison:
    reference: str                 # the reference machine's machine_id
    chosen_by: str                 # why it is the reference, in words
    side_by_side: pd.DataFrame     # one row per experiment and machine, reference first
    not_comparable: pd.DataFrame   # one row per experiment, machine and other group, with the reason
    machines: pd.DataFrame         # one row per machine, from its latest run


def _row(run) -> dict | None:
    """A run as one flat record, None if it is not a finished pipeline run with its headline."""
    tags, metrics = run.data.tags, run.data.metrics
    headline = tags.get("headline_metric", "")
    if (run.info.status != "FINISHED" or not tags.get("archlab_experiment") or not tags.get("machine_id")
            or headline not in metrics):
        return None
    return {"run_id": run.info.run_id, "start_time": run.info.start_time,
            "experiment": tags["archlab_experiment"], "architecture": tags.get("architecture", ""),
            "task": tracking.experiment_name(tags.get("task", "?"), tags.get("dataset", "?")),
            "machine_id": tags["machine_id"], "metric": headline, "headline": metrics[headline],
            "higher_is_better": tags.get("higher_is_better", "true").lower() == "true",
            **{tag: tags.get(tag, "unknown") for tag in (*IDENTITY, *MACHINE_TAGS)},
            **{metric: metrics.get(metric, np.nan) for metric in METRICS}}


def runs(client: mlflow.MlflowClient, page_size: int = PAGE) -> pd.DataFrame:
    """Every pipeline run in the store (all experiments, page by page), oldest first."""
    experiment_ids, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=page_size, page_token=token)
        experiment_ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    records, token = [], None
    while experiment_ids:
        page = client.search_runs(experiment_ids, filter_string="attributes.status = 'FINISHED'",
                                  max_results=page_size, page_token=token)
        records += [r for r in map(_row, page) if r is not None]
        token = page.token
        if not token:
            break
    frame = pd.DataFrame(records)
    return frame.sort_values(["start_time", "run_id"]).reset_index(drop=True) if records else frame


def load(uri: str) -> pd.DataFrame:
    frame = runs(mlflow.MlflowClient(tracking_uri=uri))
    if frame.empty:
        raise StageError(f"no archlab runs in {uri}: none is finished with archlab_experiment and machine_id "
                         "tags and its headline metric; run the pipeline (`make run`) first")
    log.info("%d archlab runs on %d machines in %s", len(frame), frame["machine_id"].nunique(), uri)
    return frame


def reference_machine(frame: pd.DataFrame, requested: str | None = None) -> tuple[str, str]:
    """The reference machine's machine_id and why: `requested` (a machine_id or a host name),
    else the machine with the most runs, ties to the first host alphabetically."""
    machines = (frame.groupby("machine_id").agg(host=("host", "last"), runs=("run_id", "size"))
                .reset_index().sort_values(["runs", "host", "machine_id"], ascending=[False, True, True]))
    if requested is None:
        best = machines.iloc[0]
        return best["machine_id"], f"the machine with the most runs ({best['runs']})"
    if requested in set(machines["machine_id"]):
        return requested, "chosen with --reference"
    on_host = machines[machines["host"] == requested]
    known = ", ".join(f"{m} ({h}, {n} runs)" for m, h, n in zip(machines["machine_id"], machines["host"],
                                                                  machines["runs"]))
    if len(on_host) == 1:
        return on_host["machine_id"].iloc[0], "chosen with --reference"
    if len(on_host) > 1:
        raise StageError(f"host {requested!r} is several machines; pass one machine_id of: {known}")
    raise StageError(f"unknown reference machine {requested!r}; known machines: {known}")


def _short(key: str, value: str) -> str:
    return value[:SHORT.get(key, 8)]


def _reason(run: pd.Series, base: pd.Series) -> str:
    return "; ".join(f"{key} {_short(key, run[key])} ≠ {_short(key, base[key])}"
                     for key in IDENTITY if run[key] != base[key])


def _describe(run: pd.Series) -> str:
    """cpu, isa, gpu in a few words."""
    cpu = " ".join(w for w in run["cpu"].replace("(R)", "").replace("(TM)", "").split()
                   if w not in ("CPU", "Processor") and not w.startswith("@") and not w.endswith("GHz"))
    gpu = "no GPU" if run["gpu"] in ("none", "unknown", "") else run["gpu"]
    if run["gpu_count"] not in ("0", "1", "unknown", ""):
        gpu = f"{run['gpu_count']}× {gpu}"
    return f"{cpu}, {run['cpu_isa']}, {gpu}"


def _backend(run: pd.Series) -> str:
    flags = [name for name, tag in (("XLA", "xla"), ("oneDNN", "onednn")) if run[tag] == "on"]
    return " +".join([run["keras_backend"], *flags])


def compare(source: pd.DataFrame | mlflow.MlflowClient, reference: str | None = None) -> Comparison:
    """Lay each experiment's comparable runs side by side against the reference machine."""
    frame = source if isinstance(source, pd.DataFrame) else runs(source)
    if frame.empty:
        raise StageError("no archlab runs to compare")
    frame = frame.sort_values(["start_time", "run_id"])
    ref, chosen_by = reference_machine(frame, reference)
    group = ["experiment", "machine_id", *IDENTITY]
    latest = (frame.assign(runs=frame.groupby(group)["run_id"].transform("size"))
              .drop_duplicates(group, keep="last"))
    latest = latest.assign(machine=latest.apply(_describe, axis=1), backend=latest.apply(_backend, axis=1),
                           reference=latest["machine_id"] == ref)
    side, apart = [], []
    for _, candidates in latest.groupby("experiment", sort=True):
        own = candidates[candidates["reference"]]
        if own.empty:
            apart += [{**run, "reason": f"no run on the reference machine {ref}"} for _, run in candidates.iterrows()]
            continue
        base = own.iloc[-1]
        same = (candidates[list(IDENTITY)] == base[list(IDENTITY)]).all(axis=1)
        rows = candidates[same].assign(delta=candidates["headline"] - base["headline"],
                                       **{column: candidates[metric] / base[metric]
                                          for column, metric in RATIOS.items()})
        side.append(rows.sort_values(["reference", "host", "machine_id"], ascending=[False, True, True]))
        apart += [{**run, "reason": _reason(run, base)} for _, run in candidates[~same].iterrows()]
    side_by_side = pd.concat(side).sort_values(["task", "experiment"], kind="stable")   # the reference has runs
    not_comparable = pd.DataFrame(apart, columns=[*latest.columns, "reason"])
    machines = (frame.assign(runs=frame.groupby("machine_id")["run_id"].transform("size"))
                .drop_duplicates("machine_id", keep="last"))
    machines = machines.assign(reference=machines["machine_id"] == ref, backend=machines.apply(_backend, axis=1))
    return Comparison(ref, chosen_by, side_by_side.reset_index(drop=True),
                      not_comparable.sort_values(["task", "experiment", "host"]).reset_index(drop=True),
                      machines.sort_values(["reference", "host"], ascending=[False, True]).reset_index(drop=True))


def view(source: pd.DataFrame | mlflow.MlflowClient, reference: str | None = None) -> pd.DataFrame:
    """The per-machine leaderboard rows: per experiment, each machine's latest comparable run,
    with `delta` (headline minus the reference machine's) and the `*_ratio` columns."""
    return compare(source, reference).side_by_side


def _fmt(spec: str):
    return lambda v: "n/a" if pd.isna(v) else spec.format(v)


def _machine(row) -> str:
    return f"{row['machine_id']} (reference)" if row["reference"] else row["machine_id"]


def markdown(comparison: Comparison) -> str:
    ref = comparison.machines.iloc[0]
    lines = ["# archlab: machines side by side", "",
             f"Reference machine: `{comparison.reference}` ({ref['host']}), {comparison.chosen_by}.", "",
             "Per experiment, each machine's latest run with the reference machine's params_hash, data_hash "
             "and git_commit (runs: how many such runs the machine has; only the latest is shown). Δ is the "
             "headline metric minus the reference machine's; × are ratios to the reference machine: train "
             "time and latencies below 1 and throughput (training examples per second) above 1 are faster.", ""]
    for task, group in comparison.side_by_side.groupby("task", sort=True):
        metric = group["metric"].iloc[0]
        better = "higher" if group["higher_is_better"].iloc[0] else "lower"
        table = pd.DataFrame({
            "experiment": group["experiment"], "architecture": group["architecture"],
            "machine": group.apply(_machine, axis=1), "host": group["host"], "description": group["machine"],
            "precision": group["precision"], "backend": group["backend"],
            metric: group["headline"].map("{:.4f}".format), "Δ": group["delta"].map(_fmt("{:+.4f}")),
            "train s": group["train_seconds"].map(_fmt("{:.1f}")), "train ×": group["train_ratio"].map(_fmt("{:.2f}×")),
            "examples/s ×": group["throughput_ratio"].map(_fmt("{:.2f}×")),
            "tflite float32 ms ×": group["tflite_float32_ratio"].map(_fmt("{:.2f}×")),
            "tflite int8 ms ×": group["tflite_int8_ratio"].map(_fmt("{:.2f}×")),
            "keras ms ×": group["keras_ratio"].map(_fmt("{:.2f}×")), "runs": group["runs"]})
        lines += [f"## {task}", "", f"{metric}: {better} is better.", "",
                  table.to_markdown(index=False, disable_numparse=True), ""]
    lines += ["## Not comparable", ""]
    apart = comparison.not_comparable
    if apart.empty:
        lines += ["Every run was compared.", ""]
    else:
        lines += ["Each machine's latest run of another params_hash, data_hash or git_commit than the reference "
                  "machine's latest run of the experiment (values: this run's ≠ the reference's), and the "
                  "experiments without a run on the reference machine.", "",
                  pd.DataFrame({"task": apart["task"], "experiment": apart["experiment"],
                                "machine": apart.apply(_machine, axis=1), "host": apart["host"],
                                "metric": apart["metric"], "value": apart["headline"].map("{:.4f}".format),
                                "runs": apart["runs"], "reason": apart["reason"]})
                  .to_markdown(index=False, disable_numparse=True), ""]
    machines = comparison.machines
    lines += ["## Machines", "",
              pd.DataFrame({"machine": machines.apply(_machine, axis=1), "host": machines["host"],
                            "cpu": machines["cpu"], "isa": machines["cpu_isa"], "cores": machines["cpu_count"],
                            "memory GB": machines["memory_gb"], "gpu": machines["gpu"],
                            "tensorflow": machines["tensorflow_version"], "backend": machines["backend"],
                            "runs": machines["runs"]}).to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(lines)


def summary(comparison: Comparison) -> dict:
    """The figures of the markdown as JSON (NaN as null)."""
    def records(frame: pd.DataFrame) -> list[dict]:
        return json.loads(frame.to_json(orient="records"))

    return {"reference": comparison.reference, "chosen_by": comparison.chosen_by,
            "side_by_side": records(comparison.side_by_side), "not_comparable": records(comparison.not_comparable),
            "machines": records(comparison.machines)}


def figure(comparison: Comparison, path: Path) -> None:
    """Per task: the headline metric by experiment, one bar per machine; and the train-time ratio."""
    frame = comparison.side_by_side
    machines = list(comparison.machines["machine_id"])
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(machines)}
    labels = dict(zip(comparison.machines["machine_id"], comparison.machines["host"]))
    groups = list(frame.groupby("task", sort=True))
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.2 * len(groups)), squeeze=False)
    for (task, group), (left, right) in zip(groups, axes):
        experiments = sorted(group["experiment"].unique())
        present = [m for m in machines if m in set(group["machine_id"])]
        width = 0.8 / len(present)
        for i, machine in enumerate(present):
            rows = group[group["machine_id"] == machine].set_index("experiment").reindex(experiments)
            x = np.arange(len(experiments)) + (i - (len(present) - 1) / 2) * width
            for ax, column in ((left, "headline"), (right, "train_ratio")):
                ax.bar(x, rows[column].astype(float), width, color=colours[machine],
                       label=f"{labels[machine]} ({machine})")
        for ax, title in ((left, f"{task}: {group['metric'].iloc[0]}"), (right, f"{task}: train time / reference")):
            ax.set_xticks(np.arange(len(experiments)), experiments)
            ax.set_title(title, fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        right.axhline(1.0, color="black", lw=0.8)
        left.margins(y=0.2)
        left.legend(fontsize=7, loc="upper left", ncols=len(present))
    save(fig, path)


def write(comparison: Comparison, out: Path, log_run: bool = True) -> None:
    """machines.md, .json and .png into `out` (atomically), then logged to `machines`."""
    with runtime.atomic_dir(out) as staging:
        (staging / "machines.md").write_text(markdown(comparison))
        runtime.write_json(staging / "machines.json", summary(comparison))
        figure(comparison, staging / "machines.png")
    log.info("%d experiment runs side by side, %d not comparable, in %s", len(comparison.side_by_side),
             len(comparison.not_comparable), out)
    if log_run:
        ref = comparison.machines.iloc[0]
        with mlflow.start_run(experiment_id=tracking.experiment_id(MLFLOW_EXPERIMENT), run_name="compare",
                              tags={"reference_machine": comparison.reference, "reference_host": ref["host"]}):
            mlflow.log_metrics({"machines": len(comparison.machines),
                                "side_by_side_runs": len(comparison.side_by_side),
                                "not_comparable_runs": len(comparison.not_comparable)})
            for file in FILES:
                mlflow.log_artifact(str(out / file))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="the reference machine: a machine_id or a host name "
                                            "(default: the machine with the most runs)")
    parser.add_argument("--tracking-uri", help="the MLflow store (default: MLFLOW_TRACKING_URI or the repo's)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    parser.add_argument("--no-log", action="store_true", help="do not log the outputs to MLflow")
    args = parser.parse_args(argv)

    def run() -> None:
        if args.tracking_uri:
            mlflow.set_tracking_uri(args.tracking_uri)   # sets MLFLOW_TRACKING_URI, which tracking reads
        tracking.configure()
        write(compare(load(tracking.tracking_uri()), args.reference), args.out, log_run=not args.no_log)

    runtime.run_stage(run)


if __name__ == "__main__":
    main()
