"""DVC stages `study_data` and `study`: the long-term dependency study (course notes,
"optimisation for long-term dependencies").

    python -m pipelines.study data   # adding_problem/t<T> for every T -> outputs/study_tfds
    python -m pipelines.study run    # every run -> outputs/study

The adding problem asks for the sum of two values marked somewhere in a sequence of T
steps, so the answer depends on inputs up to T steps back. Without memory of them the best
prediction is the mean, 1, with MSE 1/6 (the no-memory baseline). The study trains each
cell of `study.cells` (simple RNN, LSTM, GRU) at each length of `study.lengths`, once per
`study.clipnorm` setting (null = no clipping), through the generic train and evaluate
path, every run with the same number of updates (`epochs` x `steps_per_epoch`), the same
seed and hyperparameters. `study.workers` runs train side by side, each in its own
single-threaded process. Every run is an MLflow run in the MLflow experiment
`long_term_dependencies`.

Writes `outputs/study/`: `runs/<run>/{train,eval}/` (as for any experiment),
`results.csv` (one row per run), `metrics.json` (test MSE per run, DVC metrics),
`mse_vs_length.png` (test MSE against T per cell, with the 1/6 baseline) and
`study.md` (the table the report and the README show).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd
from matplotlib.ticker import ScalarFormatter
from tqdm import tqdm

from pipelines import config, datasets, evaluation, paths, runtime, stage, tracking, training
from pipelines.plots import plt, save

log = logging.getLogger("archlab.study")
RESULTS = "results.csv"
FIGURE = paths.STUDY_FIGURE
MLFLOW_EXPERIMENT = "long_term_dependencies"
NO_MEMORY_MSE = 1 / 6
COLUMNS = ["run", "cell", "length", "clipnorm", "updates", "test_mse", "baseline_mse", "best_val_loss"]


@dataclass(frozen=True)
class Run:
    cell: str
    length: int
    clipnorm: float | None

    @property
    def name(self) -> str:
        clip = f"clip{self.clipnorm:g}".replace(".", "p") if self.clipnorm else "noclip"
        return f"{self.cell}_t{self.length}_{clip}"

    def experiment(self, study: config.Study) -> config.Experiment:
        return config.Experiment(
            architecture=self.cell, dataset=dataset_name(self.length), seed=study.seed,
            hyperparameters=study.hyperparameters,
            training=study.training.model_copy(update={"clipnorm": self.clipnorm}), export={})


def dataset_name(length: int) -> str:
    return f"adding_problem/t{length}"


def runs(study: config.Study) -> list[Run]:
    return [Run(cell, length, clip) for cell in study.cells for length in study.lengths
            for clip in study.clipnorm]


def prepare_data(params: config.Params, data_dir: Path | None = None) -> None:
    """Generate the adding problem at every length of the study."""
    data_dir = data_dir or paths.STUDY_DATA
    lengths = params.study.lengths if params.study else []
    with runtime.atomic_dir(data_dir) as out:
        for length in lengths:
            datasets.prepare(dataset_name(length), out)
    log.info("adding problem for T in %s in %s", lengths, data_dir)


def run_study(params: config.Params, data_dir: Path | None = None, out_dir: Path | None = None) -> pd.DataFrame:
    """Train and score every run (`study.workers` at a time); write the results, the figure
    and the table."""
    data_dir, out_dir = data_dir or paths.STUDY_DATA, out_dir or paths.STUDY
    study = config.study(params)
    todo = runs(study) if study else []
    done: dict[str, tuple[dict, float]] = {}
    with runtime.atomic_dir(out_dir) as out:
        (out / "runs").mkdir()
        if todo:
            tracking.experiment_id(MLFLOW_EXPERIMENT)   # created once, before the workers start
            with _workers(min(study.workers, len(todo))) as pool:
                futures = {pool.submit(_train_and_score, run, study, out / "runs" / run.name, data_dir): run
                           for run in todo}
                progress = tqdm(as_completed(futures), total=len(futures), desc="study", unit="run")
                for future in progress:
                    done[futures[future].name] = future.result()
                    progress.set_postfix_str(futures[future].name)
        rows = [done[run.name][0] for run in todo]
        results = pd.DataFrame(rows, columns=COLUMNS)
        results.to_csv(out / RESULTS, index=False)
        runtime.write_json(out / "metrics.json", {r["run"]: {"test_mse": r["test_mse"]} for r in rows})
        runtime.write_json(out / paths.TIMINGS, {"train_seconds": {n: t for n, (_, t) in done.items()}})
        (out / "study.md").write_text(markdown(results) + "\n")
        mse_vs_length(results, NO_MEMORY_MSE, out / FIGURE)
    log.info("study: %d runs in %s", len(rows), out_dir)
    return results


@contextlib.contextmanager
def _workers(count: int):
    """`count` fresh processes, each with one TensorFlow thread: the runs are small and
    sequential step by step, so two single-threaded runs side by side finish sooner than
    one after the other on two threads, and a run's result does not depend on `count`."""
    single = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in single}
    os.environ.update(single)   # inherited by the spawned workers only (TF here is running)
    pool = ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _train_and_score(run: Run, study: config.Study, root: Path, data_dir: Path) -> tuple[dict, float]:
    """One run, in a worker process: the generic train and evaluate path into `root`."""
    runtime.setup_logging()
    context = stage.context(run.name, run.experiment(study), root, data_dir=data_dir,
                            mlflow_experiment=MLFLOW_EXPERIMENT)
    trained = training.fit(context, resumable=False)
    scored = evaluation.score(context, keras.models.load_model(context.train_dir / "model.keras"))
    row = {"run": run.name, "cell": run.cell, "length": run.length, "clipnorm": run.clipnorm,
           "updates": study.training.epochs * study.training.steps_per_epoch,
           "test_mse": scored["test_mse"], "baseline_mse": scored["baseline_mse"],
           "best_val_loss": trained["best_val_loss"]}
    return row, trained["train_seconds"]


def mse_vs_length(results: pd.DataFrame, baseline: float, path: Path) -> None:
    """The long-term dependency study: test MSE against T, one line per cell and clipping
    setting (solid: clipped, dashed: not), the no-memory baseline drawn across."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if results.empty:
        ax.text(0.5, 0.5, "no study in params.yaml", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    colours = dict(zip(sorted(results["cell"].unique()), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (cell, clip), group in results.groupby(["cell", results["clipnorm"].fillna(0.0)], sort=True):
        group = group.sort_values("length")
        label = f"{cell}, " + (f"clipnorm {clip:g}" if clip else "no clipping")
        ax.plot(group["length"], group["test_mse"], marker="o", color=colours[cell],
                ls="-" if clip else "--", label=label)
    ax.axhline(baseline, color="black", lw=1, ls=":", label=f"no memory: 1/6 = {baseline:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(results["length"].unique()))
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("test MSE")
    updates = int(results["updates"].iloc[0])
    ax.set_title(f"adding problem: test MSE after {updates:,} updates")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    save(fig, path)


def markdown(results: pd.DataFrame) -> str:
    """Test MSE per cell and clipping setting (rows) and length T (columns)."""
    if results.empty:
        return "No long-term dependency study in params.yaml (`study`)."
    frame = results.assign(clipping=results["clipnorm"].map(
        lambda c: "none" if pd.isna(c) else f"clipnorm {c:g}"))
    table = frame.pivot_table(index=["cell", "clipping"], columns="length", values="test_mse",
                              sort=True).reset_index()
    table.columns = ["cell", "clipping", *(f"T = {t}" for t in table.columns[2:])]
    for column in table.columns[2:]:
        table[column] = table[column].map("{:.4f}".format)
    updates = int(results["updates"].iloc[0])
    return "\n".join([
        f"Test MSE on the adding problem after {updates:,} updates per run (no-memory baseline "
        f"1/6 = {NO_MEMORY_MSE:.3f}; below 0.01 the sum is learnt).", "",
        table.to_markdown(index=False, disable_numparse=True)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The long-term dependency study.")
    parser.add_argument("step", choices=["data", "run"],
                        help="data: generate the adding problem for every T; run: train every run")
    args = parser.parse_args(argv)
    step = prepare_data if args.step == "data" else run_study
    runtime.run_stage(lambda: step(config.load()), backend="tensorflow")


if __name__ == "__main__":
    main()
