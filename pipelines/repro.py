"""`make run`: the whole pipeline with `dvc repro`, independent chains of stages side by side.

    python -m pipelines.repro [--jobs 3]

DVC runs one stage at a time, and most of archlab's stages keep one core of a small machine
busy for much of their time: importing TensorFlow, a small model's sequential steps, a
TFLite conversion. The experiments do not depend on one another, so this runs them as lanes:

0. `python -m pipelines.dag`: dvc.yaml from params.yaml (a new experiment gets its stages).
1. The lanes, `--jobs` at a time, each one `dvc --wait-for-lock repro --single-item ...`:
   the long-term dependency study (check_study, study_data, study), each dataset's stage
   (`prepare@`, `generate@` or `download@<dataset>`), the one-class anomaly sweep
   (check_anomaly, anomaly) and each experiment's check, train, evaluate and export stages.
   A lane starts once the dataset stage it reads has finished; the study makes its own data,
   so the datasets are prepared while it runs.
   `--single-item` keeps a lane to its own stages, so it never takes a write lock on another
   lane's files; DVC's repo lock, which `--wait-for-lock` waits for, guards `dvc.lock` and the cache between stages.
   Only lanes with a stage that `dvc status` reports as changed are started.
2. `dvc repro`: the stages no lane ran (the report), and the check that nothing is left.
3. The closing lines (`pipelines.results`): which experiments' results differ from the
   committed ones, by how much, and which machines made each.

Every stage's outputs are the same as with a plain `dvc repro` (each run is seeded and
deterministic on its own), so `dvc.lock` is too. Each lane's output goes to
`outputs/logs/<first stage>.log`; a failed lane stops new ones from starting, its log's end is
printed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipelines import config, dag, paths, results, runtime

DVC = [sys.executable, "-m", "dvc"]


@dataclass(frozen=True)
class Lane:
    name: str
    stages: tuple[str, ...]
    needs: tuple[str, ...] = ()   # the dataset stages whose outputs it reads

    @property
    def log(self) -> str:
        return f"{self.stages[0]}.log"    # stage names are unique; an experiment may be called `study`


def lanes(params: config.Params) -> list[Lane]:
    """The study (the longest lane, which makes its own data), each dataset's stage, the
    anomaly sweep, then one lane per experiment in params order."""
    made_by = {stage.partition("@")[2]: stage for stage in dataset_stages(params)}   # dataset -> its stage
    study = [Lane("study", ("check_study", "study_data", "study"))] if params.study else []
    datasets = [Lane(stage, (stage,)) for stage in made_by.values()]
    anomaly = [Lane("anomaly", ("check_anomaly", "anomaly"), _needs(made_by, params.anomaly.dataset))
               ] if params.anomaly else []
    return [*study, *datasets, *anomaly,
            *(Lane(key, tuple(f"{step}@{key}" for step in ("check", "train", "evaluate", "export")),
                   _needs(made_by, exp.dataset)) for key, exp in params.experiments.items())]


def _needs(made_by: dict[str, str], dataset: str) -> tuple[str, ...]:
    return (made_by[dataset],) if dataset in made_by else ()


def dataset_stages(params: config.Params) -> list[str]:
    """The stage of each dataset: `prepare@`, `generate@` or `download@<dataset>`."""
    return [f"{kind}@{name}" for kind, group in dag.stages(params).items()
            if kind in ("prepare", "generate", "download", "prepare_user") for name in group["foreach"]]


def changed(root: Path) -> set[str]:
    """The stages `dvc status` reports (changed dependencies, params or outputs)."""
    result = subprocess.run([*DVC, "status", "--json"], cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise runtime.StageError(f"dvc status failed (exit {result.returncode}): {result.stderr.strip()[-300:]}")
    return set(json.loads(result.stdout or "{}"))


def ran(log: Path) -> list[str]:
    """The stages a lane's log says DVC ran."""
    return [line.split("'")[1] for line in log.read_text().splitlines() if line.startswith("Running stage")]


def _step(root: Path, *args: str) -> None:
    """A dvc command whose output goes to the terminal; a failure ends the run."""
    code = subprocess.run([*DVC, *args], cwd=root, check=False).returncode
    if code != 0:
        raise runtime.StageError(f"dvc {' '.join(args)} failed (exit {code})")


def _write_dag(root: Path) -> None:
    code = subprocess.run([sys.executable, "-m", "pipelines.dag"], cwd=root, check=False).returncode
    if code != 0:
        raise runtime.StageError(f"python -m pipelines.dag failed (exit {code})")


def _lane(root: Path, lane: Lane, log: Path) -> int:
    with log.open("w") as out:
        return subprocess.run([*DVC, "--wait-for-lock", "repro", "--single-item", *lane.stages], cwd=root,
                              stdout=out, stderr=subprocess.STDOUT, check=False).returncode


def run(jobs: int = 3, root: Path = paths.ROOT) -> None:
    params = config.load(root / "params.yaml", deep=True)   # bad params: one line, before any stage
    every = lanes(params)
    _write_dag(root)
    if jobs == 0:
        _step(root, "repro", *dataset_stages(params))
    stale = changed(root) if jobs > 0 else set()
    queue = [lane for lane in every if stale & set(lane.stages)]
    pending = {stage for lane in queue for stage in lane.stages}   # stages not yet run
    logs = root / "outputs" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    failed: list[Lane] = []
    running: dict[Future, tuple[Lane, float]] = {}
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool, \
            tqdm(total=len(queue), desc=f"lanes, {jobs} at a time", unit="lane") as progress:
        while queue or running:
            while len(running) < jobs and not failed:
                lane = next((lane for lane in queue if not pending & set(lane.needs)), None)
                if lane is None:   # each one left waits for a dataset a running lane writes
                    break
                queue.remove(lane)
                running[pool.submit(_lane, root, lane, logs / lane.log)] = (lane, time.monotonic())
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                lane, started = running.pop(future)
                code = future.result()
                stages = ", ".join(ran(logs / lane.log)) or "nothing to run"
                progress.write(f"{lane.name}: {stages} ({time.monotonic() - started:.0f} s)"
                               + ("" if code == 0 else f", failed (exit {code})"))
                progress.update()
                if code != 0:
                    failed.append(lane)
                else:
                    pending -= set(lane.stages)
    if failed:
        for lane in failed:
            log = logs / lane.log
            print("\n".join([f"--- the end of {log}", *log.read_text().splitlines()[-15:]]), file=sys.stderr)
        raise runtime.StageError(f"lane {', '.join(lane.name for lane in failed)} failed (log in {logs}); "
                                 "no lane was started after it")
    _step(root, "repro")
    try:
        print("\n".join(results.closing_lines(root)))
    except runtime.StageError as e:   # no git history to compare with: the run itself succeeded
        print(f"results: not compared with the committed ones ({e})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="dvc repro, with independent lanes of stages side by side.")
    parser.add_argument("--jobs", type=int, default=3, help="lanes at a time (default 3; 0: a plain dvc repro)")
    args = parser.parse_args(argv)
    if args.jobs < 0:
        parser.error("--jobs must be 0 or more")
    runtime.run_stage(lambda: run(args.jobs))


if __name__ == "__main__":
    main()
