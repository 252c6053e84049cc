"""Copy MLflow runs from one store to another: an offline machine's results onto a shared server.

    python -m pipelines.sync --to http://mlflow.lab:5000                   # every run of mlflow/mlflow.db
    python -m pipelines.sync --to URI --from sqlite:///other/mlflow.db --experiment image_classification/digits

Each machine logs to its own store (`tracking.default_uri()`); this copies every active run of
the source (`--from`, default that store) into the target (`--to`, any tracking URI: a server
with proxied artifacts, another sqlite file), through the MLflow client only, so the target's
artifacts may live anywhere the target puts them. MLflow has no such command (mlflow/mlflow#2910).

What a run brings along: its experiment (by name, created in the target with the source
experiment's tags if missing), name, start and end time, status, params, tags, every metric's
full history (each step, timestamp and value), artifact files (same paths), dataset inputs,
and its MLflow 3 logged models (name, params, tags, status, artifacts, the metrics linked to
them, the run's model outputs and inputs). A copied model's `MLmodel` names its target run
and model ids, so the copy loads and links as its own.

Idempotent and incremental. Each target run carries the tag `archlab.synced_from` =
`<store id>:<source run id>` (each copied model the same with its model id), set when it is
created; a later sync finds it and adds only what it lacks: params and tags not there (or
tags whose value changed), metric points (key, step, timestamp, value) not there, artifact
files not there or of another size (a file rewritten at the same size is not noticed: that
would take downloading both), models not there. So the run that train opens and
evaluate and export grow later is brought up to date by each sync, and a sync that stops
halfway (network, disk) leaves nothing a second sync cannot finish. A new run's status and end
time are set last: until then it shows as RUNNING in the target.

The store id (`store_id`) is a hash of the source's Default experiment (id 0): its creation
time and artifact location, written once when the store is created, so the id survives a
moved repo, a renamed host or another URI for the same store (a server in front of it).

Not copied: runs deleted in the source, traces, the model registry (registered models and
versions, and the `mlflow.modelVersions` model tag that names them), evaluation datasets and
prompts; a parent run that is not synced (deleted, another experiment than `--experiment`)
leaves its children without `mlflow.parentRunId`. A run deleted in the target is left
deleted; a model deleted there is copied again (MLflow's model search does not list deleted
models). Params are never changed in the target (MLflow's are immutable): a differing value is
reported and kept. Runs still RUNNING in the source are copied as they are now, with a
warning, rather than skipped (a stage killed hard leaves its run RUNNING for good); the next
sync adds what they log meanwhile and their final status.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import requests
from mlflow import MlflowClient
from mlflow.entities import (
    DatasetInput,
    Experiment,
    LoggedModel,
    LoggedModelInput,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    Run,
    RunTag,
    ViewType,
)
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_MODELS, MLFLOW_MODEL_VERSIONS, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from tqdm import tqdm

from pipelines import runtime, tracking

log = logging.getLogger("archlab.sync")
SYNC_TAG = "archlab.synced_from"
BATCH = 1000        # MLflow's limit of metrics in one log_batch call
PAGE = 1000         # runs per search page
RUN_ID_TAGS = {MLFLOW_PARENT_RUN_ID, MLFLOW_LOGGED_MODELS}   # name source run ids: rewritten for the target
NOT_COPIED = {SYNC_TAG}                                      # the source's own provenance is replaced by ours
NOT_COPIED_MODEL_TAGS = {SYNC_TAG, MLFLOW_MODEL_VERSIONS}     # the registry is not copied
REWRITTEN = "MLmodel"   # a model's file that names its run and model ids (so its size may differ)
T = TypeVar("T")


@dataclass
class Counts:
    """What a sync did: runs by outcome, and every item it added."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0          # deleted in the target: left alone
    running: int = 0          # still RUNNING in the source: copied as they are
    params: int = 0
    tags: int = 0
    metric_points: int = 0
    artifacts: int = 0        # files uploaded, runs' and models' alike
    datasets: int = 0
    models: int = 0
    model_metrics: int = 0    # metric points linked to a model
    conflicts: int = 0        # params whose target value differs (MLflow params are immutable)

    def summary(self, target: str) -> str:
        runs = f"{self.created} runs created, {self.updated} updated, {self.unchanged} unchanged"
        if self.skipped:
            runs += f", {self.skipped} deleted in the target (left alone)"
        line = (f"sync to {target}: {runs}; added {self.metric_points} metric points, {self.artifacts} artifact files, "
                f"{self.models} models, {self.params} params, {self.tags} tags, {self.datasets} dataset inputs")
        if self.running:
            line += f"; {self.running} runs still running (sync again when they end)"
        if self.conflicts:
            line += f"; {self.conflicts} params differ in the target (kept)"
        return line


@dataclass
class _RunState:
    """One source run during a sync: its target run and whether the sync added to it."""

    source: Run
    target_id: str
    created: bool
    added: int = 0


@dataclass
class _Experiment:
    source: Experiment
    target_id: str
    runs: list[Run]
    models: list[LoggedModel]
    synced_runs: dict[str, Run] = field(default_factory=dict)             # source run id -> target run
    synced_models: dict[str, LoggedModel] = field(default_factory=dict)   # source model id -> target model


def _pages(page: Callable[[str | None], list[T]]) -> list[T]:
    """Every item of a paged MLflow search (`page(token)` returns a PagedList)."""
    items: list[T] = []
    token = None
    while True:
        batch = page(token)
        items.extend(batch)
        token = batch.token
        if not token:
            return items


def _one_line(error: BaseException) -> str:
    """An error as one short line; a refused or unresolved connection as its cause alone."""
    text = str(error)
    cause = re.search(r"\[Errno -?\d+\] [^'\")]+", text) if "Max retries exceeded" in text else None
    if cause:
        return cause.group(0).strip()
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def store_id(client: MlflowClient, uri: str) -> str:
    """A short id of the store behind `client`, the same by any URI that reaches it.

    Every store creates its Default experiment (id 0) when it is created and never changes its
    creation time or artifact location; a copy of the store (the same runs) has the same id.
    Without them (an old store, the experiment gone) the URI and host name stand in.
    """
    try:
        default = client.get_experiment("0")
        basis = f"{default.creation_time}|{default.artifact_location}" if default.creation_time else None
    except MlflowException:
        basis = None
    basis = basis or f"{uri}|{socket.gethostname()}"
    return hashlib.sha256(basis.encode()).hexdigest()[:12]


def default_artifact_location(target: str) -> str | None:
    """Where experiments the sync creates keep artifacts: the target's own default (a server's
    `--default-artifact-root`, proxied or not), or for a sqlite target `artifacts/` beside its
    database, as for the local store."""
    path = _sqlite_path(target)
    return (path.resolve().parent / "artifacts").as_uri() if path else None


@contextlib.contextmanager
def _no_retries() -> Iterator[None]:
    """MLflow retries an HTTP request for minutes; a first contact should fail in seconds."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="15")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _open(uri: str, role: str) -> MlflowClient:
    """A client for `uri`, checked to answer; a source sqlite or file store must exist already
    (MLflow would create an empty one)."""
    path = _sqlite_path(uri)
    if role == "source":
        scheme = urlparse(uri).scheme
        local = path or (Path(urlparse(uri).path) if scheme == "file" else Path(uri) if not scheme else None)
        if local is not None and not local.exists():
            raise runtime.StageError(f"no MLflow store at {local}: nothing to sync (run a stage first, or pass --from)")
    elif path is not None and not path.resolve().parent.is_dir():
        raise runtime.StageError(f"cannot create the target store {path}: {path.parent} does not exist")
    client = MlflowClient(tracking_uri=uri)
    try:
        with _no_retries():
            client.search_experiments(max_results=1)
    except (MlflowException, requests.exceptions.RequestException, OSError) as e:
        raise runtime.StageError(f"cannot reach the {role} store {uri}: {_one_line(e)}") from e
    return client


def _point(metric: Metric) -> tuple:
    """A metric point's identity; NaN equals NaN here."""
    value = "nan" if metric.value is None or math.isnan(metric.value) else metric.value
    return (metric.key, metric.step, metric.timestamp, value)


def _files(listing: Callable[[str | None], list]) -> dict[str, int | None]:
    """Every file under an artifact root, path -> size, from `listing(folder)`."""
    files: dict[str, int | None] = {}
    folders: list[str | None] = [None]
    while folders:
        for info in listing(folders.pop()):
            if info.is_dir:
                folders.append(info.path)
            else:
                files[info.path] = info.file_size
    return files


def _missing(source: dict[str, int | None], target: dict[str, int | None], rewritten: str = "") -> list[str]:
    return sorted(p for p, size in source.items()
                  if p not in target or (p != rewritten and size is not None and target[p] != size))


class Sync:
    """One sync from `source` to `target`: the runs of the source's experiments (`names`, or all)."""

    def __init__(self, source: MlflowClient, target: MlflowClient, *, fingerprint: str,
                 artifact_location: str | None) -> None:
        self.source, self.target = source, target
        self.fingerprint = fingerprint
        self.artifact_location = artifact_location
        self.counts = Counts()
        self.run_ids: dict[str, str] = {}       # source run id -> target run id, every experiment
        self.model_ids: dict[str, str] = {}     # source model id -> target model id

    def key(self, source_id: str) -> str:
        return f"{self.fingerprint}:{source_id}"

    # experiments -----------------------------------------------------------------------------

    def experiments(self, names: list[str] | None) -> list[_Experiment]:
        found = _pages(lambda token: self.source.search_experiments(
            view_type=ViewType.ACTIVE_ONLY, max_results=PAGE, page_token=token))
        if names:
            known = {e.name for e in found}
            unknown = [n for n in names if n not in known]
            if unknown:
                raise runtime.StageError(f"no experiment {', '.join(unknown)} in the source; it has: "
                                         f"{', '.join(sorted(known)) or 'none'}")
            found = [e for e in found if e.name in names]
        out = []
        for experiment in found:
            runs = _pages(lambda token, e=experiment: self.source.search_runs(
                [e.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE,
                order_by=["attributes.start_time ASC"], page_token=token))
            models = _pages(lambda token, e=experiment: self.source.search_logged_models(
                [e.experiment_id], page_token=token))
            if runs or models:
                out.append(self.target_experiment(experiment, runs, models))
        return out

    def target_experiment(self, source: Experiment, runs: list[Run], models: list[LoggedModel]) -> _Experiment:
        """The target's experiment of that name (created, or given the tags it lacks), with the
        runs and models earlier syncs copied into it."""
        found = self.target.get_experiment_by_name(source.name)
        if found is None:
            try:
                target_id = self.target.create_experiment(source.name, artifact_location=self.artifact_location,
                                                          tags=source.tags)
            except MlflowException:
                found = self.target.get_experiment_by_name(source.name)   # created meanwhile
                if found is None:
                    raise
        if found is not None:
            if found.lifecycle_stage != "active":
                raise runtime.StageError(f"experiment {source.name!r} is deleted in the target: restore it first")
            target_id = found.experiment_id
            for key, value in source.tags.items():
                if key not in found.tags:
                    self.target.set_experiment_tag(target_id, key, value)
        entry = _Experiment(source, target_id, runs, models)
        prefix = f"{self.fingerprint}:"
        synced = _pages(lambda token: self.target.search_runs(
            [target_id], filter_string=f"tags.`{SYNC_TAG}` LIKE '{prefix}%'", run_view_type=ViewType.ALL,
            max_results=PAGE, order_by=["attributes.start_time ASC"], page_token=token))
        for run in synced:
            source_id = run.data.tags[SYNC_TAG].removeprefix(prefix)
            if source_id in entry.synced_runs:
                log.warning("two target runs come from source run %s; adding to %s", source_id,
                            entry.synced_runs[source_id].info.run_id)
                continue
            entry.synced_runs[source_id] = run
            if run.info.lifecycle_stage == "active":
                self.run_ids[source_id] = run.info.run_id
        for model in _pages(lambda token: self.target.search_logged_models(
                [target_id], filter_string=f"tags.`{SYNC_TAG}` LIKE '{prefix}%'", page_token=token)):
            source_id = model.tags[SYNC_TAG].removeprefix(prefix)
            entry.synced_models.setdefault(source_id, model)
            self.model_ids.setdefault(source_id, model.model_id)
        return entry

    # runs ------------------------------------------------------------------------------------

    def copy_all(self, names: list[str] | None = None) -> Counts:
        """Copy what the target lacks. Each run's contents and models first, then what names
        other runs or models (parent run, model inputs, model metrics) and the status."""
        experiments = self.experiments(names)
        states: list[_RunState] = []
        # oldest first, across experiments: what a sync that stops leaves is the oldest runs
        todo = sorted(((e, r) for e in experiments for r in e.runs), key=lambda item: item[1].info.start_time)
        for experiment, run in tqdm(todo, desc="sync", unit="run", leave=False):
            state = self.run_contents(experiment, run)
            if state is not None:
                states.append(state)
        model_metrics: dict[str, list[tuple[LoggedModel, Metric]]] = defaultdict(list)
        for experiment in experiments:
            for model in experiment.models:
                if model.source_run_id is None:
                    self.model(experiment, model, None)        # a model logged outside any run
                for metric in model.metrics or []:
                    model_metrics[metric.run_id].append((model, metric))
        for state in states:
            self.run_links(state, model_metrics[state.source.info.run_id])
            if state.created:
                self.counts.created += 1
            elif state.added:
                self.counts.updated += 1
            else:
                self.counts.unchanged += 1
        return self.counts

    def run_contents(self, experiment: _Experiment, source: Run) -> _RunState | None:
        """The target run of `source` (created if new) with the params, tags, metric points,
        artifact files, dataset inputs and models it lacks."""
        source_id = source.info.run_id
        found = experiment.synced_runs.get(source_id)
        if found is not None and found.info.lifecycle_stage != "active":
            self.counts.skipped += 1
            return None
        if source.info.status == "RUNNING":
            log.warning("run %s (%s) is still running: copied as it is now", source.info.run_name, source_id)
            self.counts.running += 1
        tags = {k: v for k, v in source.data.tags.items() if k not in NOT_COPIED | RUN_ID_TAGS}
        if found is None:
            created = self.target.create_run(
                experiment.target_id, start_time=source.info.start_time, run_name=source.info.run_name,
                tags={**{k: v for k, v in tags.items() if k != MLFLOW_RUN_NAME}, SYNC_TAG: self.key(source_id)})
            target = self.target.get_run(created.info.run_id)
            self.counts.tags += len(tags)
        else:
            target = self.target.get_run(found.info.run_id)
        state = _RunState(source, target.info.run_id, created=found is None)
        self.run_ids[source_id] = state.target_id
        if found is not None and source.info.run_name != target.info.run_name:
            self.target.update_run(state.target_id, name=source.info.run_name)
            state.added += 1
        state.added += self.params_and_tags(source, target, tags)
        state.added += self.metrics(source, target)
        state.added += self.artifacts(source, target)
        state.added += self.datasets(source, target)
        for model in experiment.models:
            if model.source_run_id == source_id:
                state.added += self.model(experiment, model, state.target_id)
        return state

    def params_and_tags(self, source: Run, target: Run, tags: dict[str, str]) -> int:
        params = []
        for key, value in source.data.params.items():
            if key not in target.data.params:
                params.append(Param(key, value))
            elif target.data.params[key] != value:
                log.warning("run %s: param %s is %r in the target, %r in the source; MLflow params cannot change",
                            target.info.run_id, key, target.data.params[key], value)
                self.counts.conflicts += 1
        new_tags = [RunTag(k, v) for k, v in tags.items() if target.data.tags.get(k) != v]
        self.target.log_batch(target.info.run_id, params=params, tags=new_tags)
        self.counts.params += len(params)
        self.counts.tags += len(new_tags)
        return len(params) + len(new_tags)

    def metrics(self, source: Run, target: Run) -> int:
        """Every metric point the target run lacks, in batches of `BATCH`."""
        missing = []
        for key in source.data.metrics:
            present = ({_point(m) for m in self.target.get_metric_history(target.info.run_id, key)}
                       if key in target.data.metrics else set())
            missing.extend(Metric(m.key, m.value, m.timestamp, m.step)
                           for m in self.source.get_metric_history(source.info.run_id, key) if _point(m) not in present)
        for start in range(0, len(missing), BATCH):
            self.target.log_batch(target.info.run_id, metrics=missing[start : start + BATCH])
        self.counts.metric_points += len(missing)
        return len(missing)

    def artifacts(self, source: Run, target: Run) -> int:
        """Every artifact file the target run lacks (or holds at another size), same paths."""
        repo = get_artifact_repository(source.info.artifact_uri, tracking_uri=self.source.tracking_uri)
        wanted = _files(repo.list_artifacts)
        if not wanted:
            return 0
        present = _files(lambda folder: self.target.list_artifacts(target.info.run_id, folder))
        missing = _missing(wanted, present)
        if missing:
            with tempfile.TemporaryDirectory(prefix="archlab-sync-") as tmp:
                for path in missing:
                    repo.download_artifacts(path, dst_path=tmp)
                self.target.log_artifacts(target.info.run_id, tmp)
        self.counts.artifacts += len(missing)
        return len(missing)

    def datasets(self, source: Run, target: Run) -> int:
        present = {(d.dataset.name, d.dataset.digest) for d in target.inputs.dataset_inputs}
        missing = [DatasetInput(d.dataset, d.tags) for d in source.inputs.dataset_inputs
                   if (d.dataset.name, d.dataset.digest) not in present]
        if missing:
            self.target.log_inputs(target.info.run_id, datasets=missing)
        self.counts.datasets += len(missing)
        return len(missing)

    # models ----------------------------------------------------------------------------------

    def model(self, experiment: _Experiment, source: LoggedModel, target_run_id: str | None) -> int:
        """The target copy of a logged model (created if new) with the params, tags and artifact
        files it lacks, then given the source's final status."""
        found = experiment.synced_models.get(source.model_id)
        tags = {k: v for k, v in source.tags.items() if k not in NOT_COPIED_MODEL_TAGS}
        added = 0
        if found is None:
            target = self.target.create_logged_model(
                experiment.target_id, name=source.name, source_run_id=target_run_id,
                tags={**tags, SYNC_TAG: self.key(source.model_id)}, params=source.params,
                model_type=source.model_type)
            experiment.synced_models[source.model_id] = target
            self.model_ids[source.model_id] = target.model_id
            self.counts.models += 1
            added += 1
            present: dict[str, int | None] = {}
        else:
            target = found
            params = {k: v for k, v in source.params.items() if k not in target.params}
            new_tags = {k: v for k, v in tags.items() if target.tags.get(k) != v}
            if params:
                self.target.log_model_params(target.model_id, params)
            if new_tags:
                self.target.set_logged_model_tags(target.model_id, new_tags)
            self.counts.params += len(params)
            self.counts.tags += len(new_tags)
            added += len(params) + len(new_tags)
            present = _files(lambda folder: self.target.list_logged_model_artifacts(target.model_id, folder))
        repo = get_artifact_repository(source.artifact_location, tracking_uri=self.source.tracking_uri)
        missing = _missing(_files(repo.list_artifacts), present, rewritten=REWRITTEN)
        if missing:
            with tempfile.TemporaryDirectory(prefix="archlab-sync-") as tmp:
                for path in missing:
                    repo.download_artifacts(path, dst_path=tmp)
                if REWRITTEN in missing:
                    _point_mlmodel_at(Path(tmp) / REWRITTEN, target, target_run_id)
                self.target.log_model_artifacts(target.model_id, tmp)
            self.counts.artifacts += len(missing)
            added += len(missing)
        final = source.status in (LoggedModelStatus.READY, LoggedModelStatus.FAILED)   # not PENDING
        if final and target.status != source.status:
            experiment.synced_models[source.model_id] = self.target.finalize_logged_model(target.model_id,
                                                                                          source.status)
            added += found is not None      # a new model counts once
        return added

    # links and status ------------------------------------------------------------------------

    def run_links(self, state: _RunState, model_metrics: list[tuple[LoggedModel, Metric]]) -> None:
        """What names other runs or models (mapped to the target's ids), then the status."""
        source, target = state.source, self.target.get_run(state.target_id)
        tags = []
        parent = source.data.tags.get(MLFLOW_PARENT_RUN_ID)
        if parent is not None and parent in self.run_ids:
            tags.append(RunTag(MLFLOW_PARENT_RUN_ID, self.run_ids[parent]))
        history = source.data.tags.get(MLFLOW_LOGGED_MODELS)
        if history is not None:
            tags.append(RunTag(MLFLOW_LOGGED_MODELS, self._history(history)))
        tags = [t for t in tags if target.data.tags.get(t.key) != t.value]
        if tags:
            self.target.log_batch(state.target_id, tags=tags)
            self.counts.tags += len(tags)
            state.added += len(tags)

        outputs = {o.model_id for o in target.outputs.model_outputs} if target.outputs else set()
        new_outputs = [LoggedModelOutput(self.model_ids[o.model_id], o.step)
                       for o in (source.outputs.model_outputs if source.outputs else [])
                       if o.model_id in self.model_ids and self.model_ids[o.model_id] not in outputs]
        if new_outputs:
            self.target.log_outputs(state.target_id, new_outputs)
            state.added += len(new_outputs)
        inputs = {i.model_id for i in target.inputs.model_inputs}
        new_inputs = [LoggedModelInput(self.model_ids[i.model_id]) for i in source.inputs.model_inputs
                      if i.model_id in self.model_ids and self.model_ids[i.model_id] not in inputs]
        if new_inputs:
            self.target.log_inputs(state.target_id, models=new_inputs)
            state.added += len(new_inputs)
        state.added += self.linked_metrics(state, model_metrics)

        status = source.info.status
        if status == "RUNNING" or source.info.end_time is None:
            if target.info.status != status:
                self.target.update_run(state.target_id, status=status)
                state.added += not state.created
        elif (target.info.status, target.info.end_time) != (status, source.info.end_time):
            self.target.set_terminated(state.target_id, status=status, end_time=source.info.end_time)
            state.added += not state.created

    def linked_metrics(self, state: _RunState, model_metrics: list[tuple[LoggedModel, Metric]]) -> int:
        """The metric points of this run that the source links to a model, linked in the target."""
        present: dict[str, set[tuple]] = {}
        missing = []
        for model, metric in model_metrics:
            target_model = self.model_ids.get(model.model_id)
            if target_model is None:
                continue
            if target_model not in present:
                found = self.target.get_logged_model(target_model)
                present[target_model] = {_point(m) for m in found.metrics or [] if m.run_id == state.target_id}
            if _point(metric) not in present[target_model]:
                missing.append(Metric(metric.key, metric.value, metric.timestamp, metric.step,
                                      dataset_name=metric.dataset_name, dataset_digest=metric.dataset_digest,
                                      model_id=target_model, run_id=state.target_id))
        for start in range(0, len(missing), BATCH):
            self.target.log_batch(state.target_id, metrics=missing[start : start + BATCH])
        self.counts.model_metrics += len(missing)
        return len(missing)

    def _history(self, value: str) -> str:
        """`mlflow.log-model.history` (MLflow 2 runs) with its run ids mapped to the target's."""
        try:
            entries = json.loads(value)
        except ValueError:
            return value
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("run_id") in self.run_ids:
                entry["run_id"] = self.run_ids[entry["run_id"]]
        return json.dumps(entries)


def _point_mlmodel_at(path: Path, model: LoggedModel, run_id: str | None) -> None:
    """Make a copied `MLmodel` name its target model, run and artifact location, so that
    loading the copy links what it logs to the copy, not to ids the target does not know."""
    mlmodel = Model.load(path)
    mlmodel.model_id = mlmodel.model_uuid = model.model_id
    mlmodel.run_id = run_id
    mlmodel.artifact_path = model.artifact_location
    mlmodel.save(path)


def sync(source_uri: str, target_uri: str, *, experiments: list[str] | None = None,
         artifact_location: str | None = None) -> Counts:
    """Copy every run of `source_uri` (or of the experiments named) that `target_uri` lacks,
    and what it lacks of the others. `artifact_location`: the artifact root of experiments
    created in the target (default `default_artifact_location(target_uri)`)."""
    source = _open(source_uri, "source")
    target = _open(target_uri, "target")
    fingerprint = store_id(source, source_uri)
    if fingerprint == store_id(target, target_uri):
        raise runtime.StageError(f"{source_uri} and {target_uri} are the same store (or copies of one)")
    location = artifact_location or default_artifact_location(target_uri)
    job = Sync(source, target, fingerprint=fingerprint, artifact_location=location)
    try:
        counts = job.copy_all(experiments)
    except (MlflowException, requests.exceptions.RequestException, OSError) as e:
        raise runtime.StageError(f"sync to {target_uri} stopped: {_one_line(e)} (what was copied stays; "
                                 "run it again to finish)") from e
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Copy MLflow runs (params, tags, metric histories, artifacts, "
                                                 "dataset inputs, logged models) that another store lacks.")
    parser.add_argument("--to", dest="target", required=True, metavar="URI",
                        help="the target tracking URI: http://host:port (a shared server), sqlite:///path.db, ...")
    parser.add_argument("--from", dest="source", metavar="URI",
                        help=f"the source tracking URI (default: this repo's store, {tracking.default_uri()})")
    parser.add_argument("--experiment", action="extend", nargs="+", metavar="NAME",
                        help="only these MLflow experiments (default: all)")
    parser.add_argument("--artifact-location", metavar="URI",
                        help="artifact root of experiments created in the target (default: the target's own; "
                             "for a sqlite target, artifacts/ beside its database)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")   # no "View run at" per run,
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")    # nor a bar per file

    def run() -> None:
        counts = sync(args.source or tracking.default_uri(), args.target, experiments=args.experiment,
                      artifact_location=args.artifact_location)
        print(counts.summary(args.target))

    runtime.run_stage(run)


if __name__ == "__main__":
    main()
