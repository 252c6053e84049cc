"""Resumable training: a backup of the whole training state after each epoch, outside DVC's
outputs, that a killed train stage continues from, ending with the same bytes.

DVC removes a stage's outputs before it runs it, and the train stage writes into a staging
folder it wipes first, so neither may hold the backup: it lives in `<experiment>/backup/`
beside `train/`. After epoch k, `Backup` writes into `backup/epoch-<k>/` every variable of
the model and its optimizer (the seed generators' states too, which `save_weights` leaves
out), the early stopping's counters and best weights and whether it stopped the run, the
history so far and `history.csv`, then points `backup/latest` at it (an atomic rename: a
kill leaves the previous epoch's backup whole). A rerun of the same experiment (the same
`key`: params, data, backend) restores it and fits from epoch k (or fits no more, if early
stopping had ended it: a kill while the outputs were being written); the training batches
are one endless stream (`Task.batches`), which the train stage skips k epochs into, so every
later batch is the one the uninterrupted run would have drawn. A backup of anything else, or one that does not
load, is discarded with a warning. The train stage removes it once its outputs are in place.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

log = logging.getLogger("archlab.resume")
LATEST = "latest"


@dataclass
class State:
    epoch: int                 # epochs done
    history_csv: Path          # their history.csv
    history: dict              # their logs, as fit's History holds them
    stopped: bool              # early stopping ended the run after them: no epochs are left


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters and best weights a backup can carry."""

    def state(self) -> dict:
        return {"wait": self.wait, "best": None if self.best is None else float(self.best),
                "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}

    def restore(self, state: dict, best_weights: list[np.ndarray] | None) -> None:
        self._resumed = (state, best_weights)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        resumed = getattr(self, "_resumed", None)
        if resumed is not None:
            state, self.best_weights = resumed
            self.wait, self.best_epoch, self.best = state["wait"], state["best_epoch"], state["best"]
            self.stopped_epoch = state["stopped_epoch"]


class Backup(keras.callbacks.Callback):
    """After each epoch: the training state into `folder/epoch-<k>/`, then `latest` -> it."""

    def __init__(self, folder: Path, key: str, history_csv: Path, early_stopping: ResumableEarlyStopping | None,
                 history: dict | None = None):
        super().__init__()
        self.folder, self.key, self.history_csv, self.early_stopping = folder, key, history_csv, early_stopping
        self.history = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        target = self.folder / f"epoch-{done}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        save_variables(self.model, target / "state.npz")
        stopping = self.early_stopping.state() if self.early_stopping else {}
        best = self.early_stopping.best_weights if self.early_stopping else None
        if best is not None:
            np.savez(target / "best_weights.npz", *best)
        shutil.copyfile(self.history_csv, target / "history.csv")
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        (target / "state.json").write_text(json.dumps({"key": self.key, "epoch": done, "history": self.history,
                                                       "early_stopping": stopping,
                                                       "stopped": bool(self.model.stop_training)}))
        pointer = self.folder / (LATEST + ".tmp")
        pointer.write_text(target.name)
        pointer.replace(self.folder / LATEST)
        for old in self.folder.glob("epoch-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)


def _variables(model: keras.Model) -> list:
    return [*model.variables, *model.optimizer.variables]


def save_variables(model: keras.Model, path: Path) -> None:
    np.savez(path, *(np.asarray(v.numpy()) for v in _variables(model)))


def load_variables(model: keras.Model, path: Path) -> None:
    """Assign the saved values to the model's and its optimizer's variables (building the
    optimizer first, as a fresh model's is not), refusing any count or shape mismatch."""
    model.optimizer.build(model.trainable_variables)
    variables = _variables(model)
    with np.load(path) as saved:
        if len(saved.files) != len(variables):
            raise ValueError(f"it holds {len(saved.files)} variables, the model has {len(variables)}")
        for i, variable in enumerate(variables):
            value = saved[f"arr_{i}"]
            if value.shape != tuple(variable.shape):
                raise ValueError(f"{variable.path} is {tuple(variable.shape)}, the backup's {value.shape}")
            variable.assign(value)


def restore(folder: Path, key: str, model: keras.Model, early_stopping: ResumableEarlyStopping | None) -> State | None:
    """The backup in `folder` loaded into `model` (and `early_stopping`), or None: there is
    none, or it is of another run or unreadable (then it is removed, with a warning)."""
    if not (folder / LATEST).exists():
        shutil.rmtree(folder, ignore_errors=True)   # a backup killed before its first epoch
        return None
    try:
        target = folder / (folder / LATEST).read_text().strip()
        meta = json.loads((target / "state.json").read_text())
        if meta["key"] != key:
            raise ValueError("it is of other params, data or backend")
        load_variables(model, target / "state.npz")
        best = None
        if (target / "best_weights.npz").exists():
            with np.load(target / "best_weights.npz") as saved:
                best = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if early_stopping is not None and meta["early_stopping"]:
            early_stopping.restore(meta["early_stopping"], best)
    except Exception as e:   # whatever is wrong with it, it is not trusted
        log.warning("discarding the training backup in %s: %s", folder, str(e).splitlines()[0] if str(e) else
                    type(e).__name__)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    log.info("resuming from the backup after epoch %d (%s)%s", meta["epoch"], target,
             ": early stopping had ended the run" if meta["stopped"] else "")
    return State(meta["epoch"], target / "history.csv", meta["history"], meta["stopped"])


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
