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

from pipelines import fetch, paths
from tests.conftest import TINY_STUDY, tiny_params

pytestmark = pytest.mark.slow
TINY_ANOMALY = {"architecture": "autoencoder", "dataset": "digits", "classes": [3], "seed": 1,
                "hyperparameters": {"code_size": 4}, "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01}}


def sh(repo: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(list(cmd), cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repo holding the project's tracked files, digits data and tiny params, after `dvc repro`."""
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    tracked = subprocess.run(["git", "ls-files"], cwd=paths.ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        if (paths.ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(paths.ROOT / name, repo / name)
    fetch.fetch_digits(repo / "data" / "digits")
    (repo / "params.yaml").write_text(yaml.safe_dump({**tiny_params(), "study": TINY_STUDY, "anomaly": TINY_ANOMALY},
                                                     sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "commit", "--force", "--quiet", "data.dvc")
    sh(repo, "dvc", "repro")
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
    assert anomaly["classes"] == 1 and 0 < anomaly["anomaly_roc_auc_mean"] <= 1
    assert "One-class anomaly detection" in leaderboard
    assert not sh(repo, "git", "status", "--porcelain").stdout.strip()


def test_second_repro_does_nothing(repo):
    result = sh(repo, "dvc", "repro")
    assert "Data and pipelines are up to date" in result.stdout
    assert "Running stage" not in result.stdout
    assert "up to date" in sh(repo, "dvc", "status").stdout
    assert not sh(repo, "git", "status", "--porcelain").stdout.strip()


def test_rerun_from_scratch_in_lanes_reproduces_dvc_lock(repo):
    """What `make run` does on a fresh clone: no outputs, no cache, the lanes two at a time;
    the same seeds give the same hashes as the plain `dvc repro` of the fixture."""
    before = (repo / "dvc.lock").read_text()
    shutil.rmtree(repo / "outputs")
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    result = sh(repo, sys.executable, "-m", "pipelines.repro", "--jobs", "2")
    ran = _ran(result.stdout) | {s for log in (repo / "outputs" / "logs").glob("*.log") for s in _ran(log.read_text())}
    assert ran == {"prepare", "study_data", "study", "anomaly", "report"} | {
        f"{s}@{e}" for s in ("train", "evaluate", "export") for e in ("mlp", "cnn")}
    assert "cnn: train@cnn, evaluate@cnn, export@cnn" in result.stdout
    assert (repo / "outputs" / "report" / "leaderboard.md").exists()
    assert (repo / "dvc.lock").read_text() == before
    assert not sh(repo, "git", "status", "--porcelain").stdout.strip()


def test_one_experiment_change_reruns_that_experiment_alone(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["experiments"]["cnn"]["hyperparameters"]["dropout_rate"] = 0.2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(sh(repo, "dvc", "status", "--json").stdout)
        assert set(status) == {"train@cnn", "export@cnn", "report"}, status
        ran = sh(repo, "dvc", "repro").stdout
        assert _ran(ran) == {"train@cnn", "evaluate@cnn", "export@cnn", "report"}, ran
    finally:
        sh(repo, "git", "checkout", "params.yaml")
    # back to the committed params: DVC's run cache restores the earlier outputs; only the
    # report (no DVC outputs, so nothing in the run cache) runs again
    again = sh(repo, "dvc", "repro").stdout
    assert _ran(again) == {"report"}, again
    assert not sh(repo, "git", "status", "--porcelain").stdout.strip()


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


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
