"""A user's own data through `dvc repro` in a copy of the repo (a folder of images): editing
one of its files reruns its dataset's stage and the experiments on it, nothing else; a spoilt
file stops the run with one line and keeps the dataset prepared before. (Each kind through
the stages: `tests/pipelines/datasets/test_user.py`.)"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.pipelines.datasets.test_user import write_images
from tests.pipelines.test_e2e import _ran, _status, scratch_repo, sh

pytestmark = pytest.mark.slow
PICS = {"kind": "images", "path": "userdata/pics", "image_size": [8, 8], "channels": 1}
EXPERIMENT = {"architecture": "cnn", "dataset": "pics", "seed": 1,
              "hyperparameters": {"filters": [4], "dense_units": [8]},
              "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01},
              "export": {"variants": ["float32"], "latency_runs": 3, "parity_examples": 20}}
LANE = {f"{stage}@pics_cnn" for stage in ("train", "evaluate", "export")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_data") / "repo"
    write_images(root / "userdata" / "pics", {"circle": 12, "square": 12, "stripe": 12})
    repo = scratch_repo(root, {"datasets": ["pics"], "user_datasets": {"pics": PICS},
                               "experiments": {"pics_cnn": EXPERIMENT}})
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "user data run")
    return repo


def test_the_run_prepares_the_users_images_and_reports_the_experiment(repo):
    metrics = json.loads((repo / "outputs" / "experiments" / "pics_cnn" / "eval" / "metrics.json").read_text())
    assert metrics["test_examples"] == 3 * 2
    assert "| pics_cnn " in (repo / "outputs" / "report" / "leaderboard.md").read_text()
    lock = (repo / "dvc.lock").read_text()
    assert "prepare_user@pics:" in lock and "path: userdata/pics" in lock   # the user's files, hashed
    assert _status(repo) == set()


def test_a_spoilt_file_stops_the_run_with_one_line_and_keeps_the_prepared_dataset(repo):
    image = repo / "userdata" / "pics" / "square" / "04.png"
    original = image.read_bytes()
    image.write_bytes(original[:50])   # truncated
    prepared = sorted(p.name for p in (repo / "outputs" / "tfds" / "pics").rglob("*.tfrecord*"))
    try:
        result = sh(repo, "dvc", "repro", check=False)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert errors[0].startswith(f"error: {image}: unreadable image"), result.stderr[-2000:]
        assert sorted(p.name for p in (repo / "outputs" / "tfds" / "pics").rglob("*.tfrecord*")) == prepared
        assert not _ran(result.stdout) - {"prepare_user@pics"}
    finally:
        image.write_bytes(original)
    assert _status(repo) == set()


def test_editing_a_users_file_reruns_its_dataset_and_its_experiments_alone(repo):
    """(Last: it leaves the edit in place.)"""
    Image.new("RGB", (10, 12), (250, 10, 10)).save(repo / "userdata" / "pics" / "circle" / "03.png")
    assert _status(repo) == {"prepare_user@pics"}
    ran = _ran(sh(repo, "dvc", "repro").stdout)
    assert ran == {"prepare_user@pics", *LANE, "report"}, ran
