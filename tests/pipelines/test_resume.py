"""Resumable training (`pipelines/resume.py`): a train stage SIGKILLed after some epochs and
run again continues from its backup and ends with the same bytes as an uninterrupted run; a
backup of other settings, or a broken one, is discarded with a warning."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time

import pytest

from pipelines import config, paths, runtime, train
from tests import children
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
from pipelines import config, runtime, train
from tests.conftest import tiny_params
runtime.setup_logging()
doc = tiny_params(cnn=json.loads(args[0]))
train.train("cnn", config.validate(doc))
"""


def _start(root, tfds_dir):
    return children.start(root, tfds_dir, TRAIN, json.dumps(SLOW_CNN))


def _outputs(root) -> dict[str, bytes]:
    train_dir = root / "experiments" / "cnn" / "train"
    return {name: (train_dir / name).read_bytes() for name in ("model.keras", "history.csv", "metrics.json")}


def test_a_killed_train_stage_resumes_from_its_backup_and_ends_with_the_same_bytes(tfds_dir, tmp_path):
    whole = _start(tmp_path / "whole", tfds_dir)
    whole.wait(timeout=600)
    assert whole.returncode == 0, children.output(tmp_path / "whole")[-3000:]
    assert not (tmp_path / "whole" / "experiments" / "cnn" / "backup").exists()   # removed once done

    root = tmp_path / "killed"
    latest = root / "experiments" / "cnn" / "backup" / "latest"
    killed = _start(root, tfds_dir)
    deadline = time.monotonic() + 600
    while not (latest.exists() and latest.read_text() >= "epoch-2") and killed.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "training ended before it could be killed"
    saved = int(latest.read_text().removeprefix("epoch-"))
    assert 2 <= saved < SLOW_CNN["training"]["epochs"]
    assert not (root / "experiments" / "cnn" / "train" / "model.keras").exists()

    rerun = _start(root, tfds_dir)
    rerun.wait(timeout=600)
    err = children.output(root)
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


@pytest.mark.parametrize("case", ["after the last epoch", "after early stopping"])
def test_a_kill_while_the_outputs_are_written_resumes_without_training_more(workspace, caplog, case):
    doc = tiny_params()
    if case == "after early stopping":
        doc["experiments"]["mlp"]["training"].update(epochs=40, learning_rate=0.05, early_stopping_patience=1)
    params = config.validate(doc)
    train.train("mlp", params)
    files = ("model.keras", "history.csv", "metrics.json")
    whole = {name: (paths.train_dir("mlp") / name).read_bytes() for name in files}
    epochs = json.loads(whole["metrics.json"])["epochs_run"]
    assert (epochs < params.experiments["mlp"].training.epochs) == (case == "after early stopping")
    shutil.rmtree(paths.train_dir("mlp"))

    def killed(*args, **kwargs):
        raise RuntimeError("killed while saving")

    with pytest.MonkeyPatch.context() as patch:   # every epoch backed up, then a kill before the outputs
        patch.setattr(runtime, "save_keras", killed)
        with pytest.raises(RuntimeError, match="killed while saving"):
            train.train("mlp", params)
    assert (paths.experiment_dir("mlp") / "backup" / "latest").read_text() == f"epoch-{epochs}"
    with caplog.at_level(logging.INFO, logger="archlab.resume"):
        train.train("mlp", params)
    said = [r.getMessage() for r in caplog.records if "resuming from the backup" in r.getMessage()]
    assert said and f"after epoch {epochs}" in said[0]
    assert ("early stopping had ended the run" in said[0]) == (case == "after early stopping")
    assert {name: (paths.train_dir("mlp") / name).read_bytes() for name in files} == whole
