"""Resumable training (`pipelines/resume.py`): a train stage SIGKILLed after some epochs and
run again continues from its backup and ends with the same bytes as an uninterrupted run; a
backup of other settings, or a broken one, is discarded with a warning."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines import config, paths, train
from tests.conftest import tiny_params

pytestmark = pytest.mark.slow

# Dropout (seed generator state), early stopping (its counters and best weights), a cosine
# schedule (the optimizer's step): every piece of training state a resume must carry.
SLOW_CNN = {"architecture": "cnn", "dataset": "digits", "seed": 11,
            "hyperparameters": {"filters": [16, 32], "dense_units": [32], "dropout_rate": 0.3},
            "training": {"epochs": 8, "batch_size": 8, "learning_rate": 0.002, "lr_schedule": "cosine",
                         "early_stopping_patience": 3},
            "export": {"latency_runs": 2}}

TRAIN = """
import os, sys
from pathlib import Path
from pipelines import config, paths, runtime, train
from tests.conftest import tiny_params
runtime.setup_logging()
root, tfds = Path(sys.argv[1]), Path(sys.argv[2])
paths.TFDS_DIR, paths.EXPERIMENTS = tfds, root / "experiments"
os.chdir(root)
doc = tiny_params(cnn=__import__("json").loads(sys.argv[3]))
train.train("cnn", config.validate(doc))
"""


def _start(root, tfds_dir):
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN)
    env = {**os.environ, "PYTHONPATH": str(paths.ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    return subprocess.Popen([sys.executable, str(root / "train.py"), str(root), str(tfds_dir), json.dumps(SLOW_CNN)],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _outputs(root) -> dict[str, bytes]:
    train_dir = root / "experiments" / "cnn" / "train"
    return {name: (train_dir / name).read_bytes() for name in ("model.keras", "history.csv", "metrics.json")}


def test_a_killed_train_stage_resumes_from_its_backup_and_ends_with_the_same_bytes(tfds_dir, tmp_path):
    whole = _start(tmp_path / "whole", tfds_dir)
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err[-3000:]
    assert not (tmp_path / "whole" / "experiments" / "cnn" / "backup").exists()   # removed once done

    root = tmp_path / "killed"
    latest = root / "experiments" / "cnn" / "backup" / "latest"
    killed = _start(root, tfds_dir)
    deadline = time.monotonic() + 600
    while not (latest.exists() and latest.read_text() >= "epoch-2") and killed.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "training ended before it could be killed"
    saved = int(latest.read_text().removeprefix("epoch-"))
    assert 2 <= saved < SLOW_CNN["training"]["epochs"]
    assert not (root / "experiments" / "cnn" / "train" / "model.keras").exists()

    rerun = _start(root, tfds_dir)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    assert f"resuming from the backup after epoch {saved}" in err
    assert _outputs(root) == _outputs(tmp_path / "whole")
    print(f"killed after epoch {saved} of {SLOW_CNN['training']['epochs']}; resumed to identical bytes")


@pytest.mark.parametrize("spoil", ["other settings", "broken weights"])
def test_an_unusable_backup_is_discarded_with_a_warning(workspace, caplog, spoil):
    params = config.validate(tiny_params())
    train.train("mlp", params)
    fresh = (paths.train_dir("mlp") / "model.keras").read_bytes()
    backup = paths.experiment_dir("mlp") / "backup"
    (backup / "epoch-2").mkdir(parents=True)
    (backup / "latest").write_text("epoch-2")
    key = "0" * 16 if spoil == "other settings" else None
    if key is None:   # the right key, a weights file that does not load
        from pipelines import training
        key = training._backup_key(params.experiments["mlp"])
    (backup / "epoch-2" / "state.json").write_text(json.dumps({"key": key, "epoch": 2, "history": {},
                                                               "early_stopping": {}}))
    (backup / "epoch-2" / "state.npz").write_bytes(b"not a weights file")
    with caplog.at_level(logging.WARNING, logger="archlab.resume"):
        train.train("mlp", params)
    assert any("discarding the training backup" in r.getMessage() for r in caplog.records)
    assert (paths.train_dir("mlp") / "model.keras").read_bytes() == fresh
    assert not backup.exists()
