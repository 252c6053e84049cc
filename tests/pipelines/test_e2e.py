"""`dvc repro` end to end in a copy of the repo, with small params on digits."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import fetch, paths, runtime
from tests.conftest import TINY_STUDY, tiny_params

pytestmark = pytest.mark.slow
TINY_ANOMALY = {"architecture": "autoencoder", "dataset": "digits", "classes": [3], "seed": 1,
                "hyperparameters": {"code_size": 4}, "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01}}


def sh(repo: Path, *cmd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {}), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(list(cmd), cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def scratch_repo(repo: Path, params: dict) -> Path:
    """A git repo at `repo` holding the project's tracked files (no results), digits data,
    `params` and its dvc.yaml, nothing run yet."""
    tracked = subprocess.run(["git", "ls-files"], cwd=paths.ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        if (paths.ROOT / name).is_file() and not name.startswith("outputs/"):   # results come from this run
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(paths.ROOT / name, repo / name)
    fetch.fetch_digits(repo / "data" / "digits")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    sh(repo, sys.executable, "-m", "pipelines.dag")   # dvc.yaml for these params
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "commit", "--force", "--quiet", "data.dvc")
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repo holding the project's tracked files, digits data and tiny params, after `dvc repro`."""
    repo = scratch_repo(tmp_path_factory.mktemp("e2e") / "repo",
                        {**tiny_params(), "study": TINY_STUDY, "anomaly": TINY_ANOMALY})
    sh(repo, "dvc", "repro", env={runtime.IMPORTS_LOG: str(repo.parent / "imports")})
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny run")
    return repo


def test_repro_writes_every_stage_output(repo):
    for name in ("mlp", "cnn"):
        base = repo / "outputs" / "experiments" / name
        assert (base / "train" / "model.keras").exists()
        assert json.loads((base / "eval" / "metrics.json").read_text())["test_accuracy"] > 0.3
        assert (base / "export" / "tflite" / "int8.tflite").exists()
    leaderboard = (repo / "outputs" / "report" / "leaderboard.md").read_text()
    assert "| mlp " in leaderboard and "Long-term dependencies" in leaderboard
    results = (repo / "outputs" / "study" / "results.csv").read_text().splitlines()
    assert len(results) == 1 + 4 and (repo / "outputs" / "study" / "mse_vs_length.png").exists()
    anomaly = json.loads((repo / "outputs" / "anomaly" / "metrics.json").read_text())
    # one normal class, 3: its autoencoder tells 3s from the other digits better than chance
    assert anomaly["classes"] == 1 and anomaly["anomaly_roc_auc_mean"] == anomaly["roc_auc_3"] > 0.5
    assert "One-class anomaly detection" in leaderboard
    assert not sh(repo, "git", "status", "--porcelain").stdout.strip()


def test_second_repro_does_nothing(repo):
    result = sh(repo, "dvc", "repro")
    assert "Data and pipelines are up to date" in result.stdout
    assert "Running stage" not in result.stdout
    assert "up to date" in sh(repo, "dvc", "status").stdout
    assert not sh(repo, "git", "status", "--porcelain").stdout.strip()


def test_results_travel_in_git_and_a_change_is_named_with_its_delta(repo):
    from pipelines import results

    tracked = set(sh(repo, "git", "ls-files", "outputs").stdout.split())
    assert {"outputs/experiments/mlp/eval/metrics.json", "outputs/experiments/mlp/train/history.csv",
            "outputs/report/summary.json", "outputs/report/machines.json", "outputs/study/metrics.json",
            "outputs/checks/mlp.ok"} <= tracked
    assert not any(name.endswith((".keras", ".tflite", ".png")) for name in tracked)
    assert json.loads(sh(repo, "dvc", "metrics", "diff", "HEAD", "--json").stdout or "{}") == {}
    machines = json.loads((repo / "outputs" / "report" / "machines.json").read_text())
    assert machines["mlp"]["machine_id"] == machines["cnn"]["machine_id"] != "unknown"
    path = repo / "outputs" / "experiments" / "cnn" / "eval" / "metrics.json"
    committed = path.read_text()
    moved = json.loads(committed)
    moved["test_accuracy"] -= 0.0125
    moved["test_loss"] += 0.5
    path.write_text(json.dumps(moved))
    try:
        lines = results.closing_lines(repo)
    finally:
        path.write_text(committed)
    assert lines[0] == "results: 1 of 4 experiments and sweeps differ from the committed ones (HEAD):"
    assert lines[1].startswith("  cnn: test_accuracy ") and "(-0.0125); also test_loss" in lines[1]
    assert lines[2].startswith(f"committed results from: {machines['cnn']['host']} ({machines['cnn']['machine_id']}")
    assert results.closing_lines(repo) == [
        "results: every metric equals the committed one (HEAD) in all 4 experiments and sweeps"]


def test_a_second_clone_pulls_the_results_and_is_up_to_date_without_training(repo, tmp_path):
    env = {"ARCHLAB_REMOTE": str(tmp_path / "remote")}
    sh(repo, sys.executable, "-m", "pipelines.remote", "push", env=env)
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, sys.executable, "-m", "pipelines.remote", "pull", env=env)
    assert (clone / "outputs" / "experiments" / "cnn" / "export" / "tflite" / "float32.tflite").read_bytes() == \
        (repo / "outputs" / "experiments" / "cnn" / "export" / "tflite" / "float32.tflite").read_bytes()
    status = sh(clone, "dvc", "status")
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    assert not sh(clone, "git", "status", "--porcelain").stdout.strip()
    assert not (clone / "outputs" / "logs").exists()   # nothing ran


def test_rerun_from_scratch_in_lanes_reproduces_dvc_lock(repo):
    """What `make run` does on a fresh clone: no outputs, no cache, the lanes two at a time;
    the same seeds give the same hashes as the plain `dvc repro` of the fixture."""
    before = (repo / "dvc.lock").read_text()
    shutil.rmtree(repo / "outputs")
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    result = sh(repo, sys.executable, "-m", "pipelines.repro", "--jobs", "2")
    ran = _ran(result.stdout) | {s for log in (repo / "outputs" / "logs").glob("*.log") for s in _ran(log.read_text())}
    assert ran == {"prepare@digits", "check_study", "study_data", "study", "check_anomaly", "anomaly", "report"} | {
        f"{s}@{e}" for s in ("check", "train", "evaluate", "export") for e in ("mlp", "cnn")}
    assert "cnn: check@cnn, train@cnn, evaluate@cnn, export@cnn" in result.stdout
    assert (repo / "outputs" / "report" / "leaderboard.md").exists()
    assert (repo / "dvc.lock").read_text() == before
    assert "results: every metric equals the committed one (HEAD) in all 4 experiments and sweeps" in result.stdout
    assert not sh(repo, "git", "status", "--porcelain").stdout.strip()


def test_one_experiment_change_reruns_that_experiment_alone(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["experiments"]["cnn"]["hyperparameters"]["dropout_rate"] = 0.2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert _status(repo) == {"check@cnn", "train@cnn", "export@cnn", "report"}
        ran = sh(repo, "dvc", "repro").stdout
        assert _ran(ran) == {"check@cnn", "train@cnn", "evaluate@cnn", "export@cnn", "report"}, ran
    finally:
        sh(repo, "git", "checkout", "params.yaml")
    # back to the committed params: DVC's run cache restores the earlier outputs; only the
    # check and the report (outputs kept out of the cache, so not in the run cache) run again
    again = sh(repo, "dvc", "repro").stdout
    assert _ran(again) == {"check@cnn", "report"}, again
    assert not sh(repo, "git", "status", "--porcelain").stdout.strip()


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def _status(repo: Path) -> set[str]:
    return set(json.loads(sh(repo, "dvc", "status", "--json").stdout))


LANE = {name: {f"{s}@{name}" for s in ("check", "train", "evaluate", "export")} for name in ("mlp", "cnn")}


@pytest.mark.parametrize("module, stages", [
    ("models/cnn.py", LANE["cnn"] | {"report"}),
    ("models/mlp.py", LANE["mlp"] | {"report"}),
    ("pipelines/tasks/image_classification.py", LANE["mlp"] | LANE["cnn"] | {"report"}),
    ("models/recurrent.py", {"check_study", "study"}),
    ("models/autoencoder.py", {"check_anomaly", "anomaly"}),
    ("pipelines/exporters/single.py", {"export@mlp", "export@cnn"}),
    ("pipelines/datasets/sequences.py", {"study_data", "study"}),
])
def test_a_code_change_reruns_only_the_stages_that_import_it(repo, module, stages):
    path = repo / module
    path.write_text(path.read_text() + "# a comment\n")
    try:
        assert _status(repo) == stages
    finally:
        sh(repo, "git", "checkout", module)
    assert _status(repo) == set()


def test_a_new_dataset_adds_its_prepare_stage_alone(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"].append("mackey_glass")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        sh(repo, sys.executable, "-m", "pipelines.dag")
        assert _status(repo) == {"generate@mackey_glass"}
    finally:
        sh(repo, "git", "checkout", "params.yaml", "dvc.yaml")


BROKEN = [  # (what the user did, the params.yaml text it gives, the error DVC's run must print)
    ("a renamed key", lambda t: t.replace("epochs: 4", "epochz: 4", 1),
     "error: params.yaml: `experiments.mlp.training.epochz`: unknown key; did you mean `epochs`?"),
    ("an unknown architecture", lambda t: t.replace("architecture: mlp", "architecture: transformer", 1),
     "error: params.yaml: experiments.mlp.architecture: unknown architecture 'transformer'; known: "),
    ("a negative value", lambda t: t.replace("dropout_rate: 0.1", "dropout_rate: -0.1", 1),
     "error: params.yaml: experiments.mlp.hyperparameters.dropout_rate: Input should be greater than or "
     "equal to 0"),
]


@pytest.mark.parametrize("broken, edit, error", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_params_stop_plain_dvc_repro_before_any_output_is_removed(repo, broken, edit, error):
    original = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(edit(original))
    try:
        before = sh(repo, "dvc", "status", "--json").stdout
        result = sh(repo, "dvc", "repro", check=False)
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and lines[0].startswith(error), result.stderr[-2000:]
        assert sh(repo, "dvc", "status", "--json").stdout == before   # nothing removed, nothing ran
        assert _ran(result.stdout) <= {"check@mlp", "check@cnn"}
    finally:
        (repo / "params.yaml").write_text(original)
    assert _status(repo) == set()


def test_a_yaml_syntax_error_stops_dvc_itself_with_the_line(repo):
    original = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(original.replace("datasets:", "datasets: [", 1))
    try:
        result = sh(repo, "dvc", "repro", check=False)
        assert result.returncode != 0 and "params.yaml" in result.stderr and "line" in result.stderr
        assert not _ran(result.stdout)
        assert (repo / "outputs" / "experiments" / "mlp" / "train" / "model.keras").exists()
    finally:
        (repo / "params.yaml").write_text(original)
    assert _status(repo) == set()


def test_metrics_and_plots_commands(repo):
    metrics = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    flat = json.dumps(metrics)
    assert "test_accuracy" in flat and "tflite_int8_size_bytes" in flat and "best_val_loss" in flat
    assert "summary.json" in flat and "int8_size_kb" in flat
    assert "gru_t6_clip1" in flat and "test_mse" in flat
    plots = sh(repo, "dvc", "plots", "show", "--json").stdout
    assert "history.csv" in plots and "confusion_matrix.png" in plots and "mse_vs_length.png" in plots


def test_dvc_experiments(repo):
    sh(repo, "dvc", "exp", "run", "--temp", "-S", "experiments.mlp.training.epochs=2", "-n", "short")
    shown = sh(repo, "dvc", "exp", "show", "--json").stdout
    assert "short" in shown and "test_accuracy" in shown
    # the temporary copy logged into this repo's MLflow store
    with sqlite3.connect(repo / "mlflow" / "mlflow.db") as db:
        runs = db.execute("select count(*) from runs where name = 'mlp'").fetchone()[0]
    assert runs >= 3          # first repro, rerun from scratch, the experiment
    assert not list((repo / ".dvc" / "tmp").glob("exps/**/mlflow/mlflow.db"))


def test_every_stage_imports_only_code_its_stage_declares(repo):
    """Each stage of the fixture's `dvc repro`, as DVC ran it, recorded the project modules it
    imported (runtime.IMPORTS_LOG): each must be among the stage's dependencies."""
    from pipelines import config, dag, imports

    stages = dag.resolved(config.validate(yaml.safe_load((repo / "params.yaml").read_text())))
    by_command = {tuple(stage["cmd"].split()[2:]): name for name, stage in stages.items()}
    seen = set()
    for record in (repo.parent / "imports").glob("*.json"):
        run = json.loads(record.read_text())
        module = ".".join(Path(run["argv"][0]).relative_to(repo).with_suffix("").parts)
        name = by_command[(module, *run["argv"][1:])]
        files = {imports.files([m], repo)[0] for m in run["modules"] if imports.module_path(m, repo)}
        undeclared = files - set(stages[name]["deps"])
        assert not undeclared, f"{name} imports {sorted(undeclared)} but does not depend on them"
        seen.add(name)
    assert seen == set(stages)   # every stage ran and was checked
