"""pipelines/sync.py on real MLflow stores: a source sqlite store with file artifacts (two
experiments, a nested run, a failed run, metric histories with explicit timestamps and a NaN,
artifacts in sub-folders, a dataset input, a logged pyfunc model) synced into a target sqlite
store. Everything arrives once with identical values; a second sync adds nothing; a run that
grew brings exactly its growth; a sync that stopped halfway is finished by the next."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import LoggedModelStatus, Metric, Run

from pipelines import runtime, sync

T0 = 1_700_000_000_000          # explicit metric timestamps (ms)
BATCH_POINTS = 2_500             # more than one log_batch call


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame) -> pd.DataFrame:
        return model_input


@dataclass
class Store:
    uri: str
    root: Path

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"


@contextlib.contextmanager
def logging_to(uri: str):
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def new_store(tmp_path_factory) -> Callable[[Path], Store]:
    """Empty stores, each a copy of one fresh database: creating a database runs MLflow's
    migrations (~3 s), copying it does not. A store is told apart from its copies by its Default
    experiment's creation time (`sync.store_id`), so each copy gets its own."""
    template = tmp_path_factory.mktemp("empty") / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()
    created = itertools.count(T0)

    def make(root: Path) -> Store:
        root.mkdir(parents=True)
        shutil.copyfile(template, root / "mlflow.db")
        with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
            db.execute("UPDATE experiments SET creation_time = ? WHERE experiment_id = 0", (next(created),))
            db.commit()
        return Store(f"sqlite:///{root / 'mlflow.db'}", root)

    return make


def build_source(store: Store) -> Store:
    """Two experiments: digits (mlp with everything, cnn failed) and a study (parent and nested child)."""
    client, root = store.client, store.root
    location = store.artifacts.as_uri()
    digits = client.create_experiment("image_classification/digits", artifact_location=location,
                                      tags={"mlflow.experimentKind": "custom_model_development", "task": "digits"})
    study = client.create_experiment("long_term_dependencies", artifact_location=location)
    files = root / "files"
    for path, content in {"plots/learning_curves.png": b"\x89PNG fake", "history/history.csv": b"epoch,loss\n0,1\n",
                          "text/deep/notes.txt": b"nested two levels"}.items():
        (files / path).parent.mkdir(parents=True, exist_ok=True)
        (files / path).write_bytes(content)
    with logging_to(store.uri):
        with mlflow.start_run(experiment_id=digits, run_name="mlp") as run:
            mlflow.log_params({"hidden_units": "[32]", "training.learning_rate": 0.01})
            mlflow.set_tags({"architecture": "mlp", "dvc_stage": "train"})
            points = [Metric("loss", 1 / (s + 1), T0 + 10 * s, s) for s in range(5)]
            points += [Metric("val_loss", math.nan if s == 2 else 2 / (s + 1), T0 + 10 * s + 1, s) for s in range(5)]
            points += [Metric("batch_loss", 1 / (s + 1), T0 + s, s) for s in range(BATCH_POINTS)]
            client.log_batch(run.info.run_id, metrics=points)
            dataset = MetaDataset(HTTPDatasetSource("https://example.org/digits.csv"), name="digits", digest="d1g1t5")
            mlflow.log_input(dataset, context="training")
            mlflow.log_artifacts(str(files))
            mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=[], step=4)
        with mlflow.start_run(experiment_id=digits, run_name="cnn") as failed:
            mlflow.log_param("filters", "[8]")
            twice = [Metric("loss", 0.5, T0 + 5, 0), Metric("loss", 0.5, T0 + 6, 0)]   # same step, two times
            client.log_batch(failed.info.run_id, metrics=twice)
        client.set_terminated(failed.info.run_id, status="FAILED", end_time=T0 + 99)
        baseline = client.create_logged_model(digits, name="majority_baseline", params={"strategy": "majority"})
        client.finalize_logged_model(baseline.model_id, LoggedModelStatus.READY)     # a model outside any run
        with mlflow.start_run(experiment_id=study, run_name="study"):
            with mlflow.start_run(experiment_id=study, run_name="gru_t4", nested=True):
                mlflow.log_metric("test_mse", 0.1, step=0, timestamp=T0)
    return store


def source_runs(store: Store) -> list[Run]:
    experiments = store.client.search_experiments()
    return store.client.search_runs([e.experiment_id for e in experiments])


def target_run(target: Store, source: Store, run_id: str) -> Run:
    key = f"{sync.store_id(source.client, source.uri)}:{run_id}"
    experiments = [e.experiment_id for e in target.client.search_experiments()]
    found = target.client.search_runs(experiments, filter_string=f"tags.`{sync.SYNC_TAG}` = '{key}'")
    assert len(found) == 1, key
    return found[0]


def histories(client: MlflowClient, run: Run) -> dict[str, list[tuple]]:
    return {key: sorted((m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
                        for m in client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}


def artifact_files(client: MlflowClient, run_id: str, into: Path) -> dict[str, bytes]:
    into.mkdir(parents=True)
    root = Path(client.download_artifacts(run_id, "", dst_path=str(into)))
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def row_counts(store: Store) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(store.root / "mlflow.db")) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}


def stored_files(store: Store) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(store.artifacts)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in store.artifacts.rglob("*") if p.is_file()}


def assert_same(source: Store, target: Store, tmp_path: Path) -> None:
    """Every source run is in the target once, with identical contents."""
    runs = source_runs(source)
    ids = {r.info.run_id: target_run(target, source, r.info.run_id).info.run_id for r in runs}
    for i, run in enumerate(runs):
        copy = target.client.get_run(ids[run.info.run_id])
        assert (copy.info.run_name, copy.info.start_time, copy.info.end_time, copy.info.status) == (
            run.info.run_name, run.info.start_time, run.info.end_time, run.info.status)
        assert copy.data.params == run.data.params
        expected = dict(run.data.tags)
        if "mlflow.parentRunId" in expected:
            expected["mlflow.parentRunId"] = ids[expected["mlflow.parentRunId"]]
        assert {k: v for k, v in copy.data.tags.items() if k != sync.SYNC_TAG} == expected
        assert histories(target.client, copy) == histories(source.client, run)
        assert (artifact_files(target.client, copy.info.run_id, tmp_path / f"t{i}")
                == artifact_files(source.client, run.info.run_id, tmp_path / f"s{i}"))
        assert ([(d.dataset.to_dictionary(), [(t.key, t.value) for t in d.tags]) for d in copy.inputs.dataset_inputs]
                == [(d.dataset.to_dictionary(), [(t.key, t.value) for t in d.tags]) for d in run.inputs.dataset_inputs])


@pytest.fixture(scope="module")
def synced(tmp_path_factory, new_store):
    """The source store, the target store and what the first sync reported."""
    root = tmp_path_factory.mktemp("sync")
    source, target = build_source(new_store(root / "source")), new_store(root / "target")
    counts = sync.sync(source.uri, target.uri)
    return source, target, counts


def test_sync_copies_every_run_with_identical_contents(synced, tmp_path):
    source, target, counts = synced
    assert (counts.created, counts.updated, counts.unchanged, counts.models) == (4, 0, 0, 2)
    assert counts.metric_points == 5 + 5 + BATCH_POINTS + 2 + 1
    assert_same(source, target, tmp_path)
    experiment = target.client.get_experiment_by_name("image_classification/digits")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == target.artifacts.as_uri()


def test_sync_copies_the_logged_model_as_the_target_runs_own(synced, tmp_path):
    source, target, _ = synced
    experiment = target.client.get_experiment_by_name("image_classification/digits").experiment_id
    (original,) = source.client.search_logged_models(
        [source.client.get_experiment_by_name("image_classification/digits").experiment_id],
        filter_string="name = 'model'")
    (copy,) = target.client.search_logged_models([experiment], filter_string="name = 'model'")
    run = target_run(target, source, original.source_run_id)
    assert (copy.name, copy.params, copy.status, copy.source_run_id) == (
        original.name, original.params, LoggedModelStatus.READY, run.info.run_id)
    assert {k: v for k, v in copy.tags.items() if k != sync.SYNC_TAG} == original.tags
    assert {m.key for m in original.metrics} == {"loss", "val_loss", "batch_loss"}   # those at step 4
    assert sorted((m.key, m.step, m.timestamp, m.value) for m in copy.metrics) == sorted(
        (m.key, m.step, m.timestamp, m.value) for m in original.metrics)
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(copy.model_id, 4)]
    files = {p.path for p in target.client.list_logged_model_artifacts(copy.model_id)}
    assert files == {p.path for p in source.client.list_logged_model_artifacts(original.model_id)}
    model = mlflow.pyfunc.load_model(copy.artifact_location)
    assert (model.metadata.model_id, model.metadata.run_id) == (copy.model_id, run.info.run_id)
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    assert model.predict(frame).equals(frame)
    (baseline,) = target.client.search_logged_models([experiment], filter_string="name = 'majority_baseline'")
    assert (baseline.params, baseline.status, baseline.source_run_id) == (
        {"strategy": "majority"}, LoggedModelStatus.READY, None)


def test_a_second_sync_adds_nothing(synced, capsys, monkeypatch):
    source, target, _ = synced
    rows, files = row_counts(target), stored_files(target)
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    sync.main(["--from", source.uri, "--to", target.uri])
    assert "0 runs created, 0 updated, 4 unchanged; added 0 metric points, 0 artifact files, 0 models" in (
        capsys.readouterr().out)
    assert row_counts(target) == rows
    assert stored_files(target) == files


def test_a_resync_adds_exactly_what_a_run_gained(tmp_path, new_store):
    source, target = build_source(new_store(tmp_path / "source")), new_store(tmp_path / "target")
    sync.sync(source.uri, target.uri)
    (mlp,) = [r for r in source_runs(source) if r.info.run_name == "mlp"]
    client = source.client
    client.update_run(mlp.info.run_id, status="RUNNING")       # the evaluate stage reopens the run
    client.log_batch(mlp.info.run_id, metrics=[Metric("test_accuracy", 0.9, T0 + 100, 0),
                                               Metric("loss", 0.1, T0 + 100, 5), Metric("loss", 0.09, T0 + 110, 6)])
    client.log_param(mlp.info.run_id, "evaluation.batch_size", "64")
    client.set_tag(mlp.info.run_id, "dvc_stage", "evaluate")
    report = tmp_path / "report.md"
    report.write_text("# accuracy 0.9\n")
    client.log_artifact(mlp.info.run_id, str(report), "eval")

    counts = sync.sync(source.uri, target.uri)        # while the run is still open: copied as it is
    assert (counts.created, counts.updated, counts.unchanged, counts.running) == (0, 1, 3, 1)
    assert (counts.metric_points, counts.artifacts, counts.params, counts.tags, counts.models) == (3, 1, 1, 1, 0)
    assert_same(source, target, tmp_path / "open")

    client.set_terminated(mlp.info.run_id, end_time=T0 + 200)
    counts = sync.sync(source.uri, target.uri)
    assert (counts.created, counts.updated, counts.unchanged, counts.metric_points, counts.artifacts) == (0, 1, 3, 0, 0)
    assert_same(source, target, tmp_path / "ended")


def test_a_sync_that_stopped_halfway_is_finished_by_the_next(synced, tmp_path, new_store):
    source, target = synced[0], new_store(tmp_path / "target")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the artifact folder should go")
    location = (blocked / "artifacts").as_uri()
    with pytest.raises(runtime.StageError, match="stopped.*run it again to finish"):
        sync.sync(source.uri, target.uri, artifact_location=location)
    (half,) = target.client.search_runs([e.experiment_id for e in target.client.search_experiments()])
    assert half.info.status == "RUNNING" and half.data.params     # created, params and metrics in, no artifacts
    blocked.unlink()
    counts = sync.sync(source.uri, target.uri)
    assert (counts.created, counts.updated, counts.models) == (3, 1, 2)
    assert_same(source, target, tmp_path / "compare")


def test_an_unreachable_target_is_one_line(synced, capsys):
    source, _, _ = synced
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SystemExit) as stop:
        sync.main(["--from", source.uri, "--to", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 1
    assert err.startswith(f"error: cannot reach the target store http://127.0.0.1:{port}") and "\n" not in err


def test_a_missing_source_store_is_one_line_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(SystemExit):
        sync.main(["--from", f"sqlite:///{missing}", "--to", f"sqlite:///{tmp_path / 'target.db'}"])
    assert capsys.readouterr().err.strip() == f"error: no MLflow store at {missing}: nothing to sync " \
                                              "(run a stage first, or pass --from)"
    assert not missing.exists() and not (tmp_path / "target.db").exists()


def test_an_unknown_experiment_names_the_known_ones(synced):
    source, target, _ = synced
    with pytest.raises(runtime.StageError, match="no experiment nope in the source; it has: .*long_term"):
        sync.sync(source.uri, target.uri, experiments=["nope"])
