"""The machine fingerprint, the store's experiments and the UI links."""

from __future__ import annotations

import json
import subprocess

import mlflow
import pytest

from pipelines import tracking

SMI = ("NVIDIA H100 80GB HBM3, 81559, 9.0, 580.159.03\n"
       "NVIDIA H100 80GB HBM3, 81559, 9.0, 580.159.03\n")


def test_cpu_fingerprint_reads_this_machine():
    tags = tracking.fingerprint()
    flags = open("/proc/cpuinfo").read().split("flags", 1)[1].splitlines()[0].split()
    assert tags["cpu_isa"].split(",") == [f for f in tracking.NUMERIC_ISA if f in flags]
    gpus = tracking._gpus()   # nvidia-smi's cards, none on a CPU machine
    assert tags["gpu"] == (", ".join(g["name"] for g in gpus) or "none") and tags["gpu_count"] == str(len(gpus))
    assert tags["host"] and tags["cpu"] and tags["cpu_caches"]
    assert float(tags["memory_gb"]) > 0.5 and tags["cpu_model_id"].startswith("family ")
    assert tags["onednn"] in ("on", "off") and tags["keras_backend"] == "tensorflow"
    assert tracking.fingerprint() == tags   # stable within a process


def test_gpu_fingerprint_names_each_card(monkeypatch):
    """On a GPU machine: every card's name, memory, compute capability and the driver, from nvidia-smi."""
    monkeypatch.setattr(tracking.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(tracking.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, SMI, ""))
    tags = tracking.fingerprint()
    assert tags["gpu"] == "NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3" and tags["gpu_count"] == "2"
    assert (tags["gpu_memory_mb"], tags["gpu_compute_capability"], tags["gpu_driver"]) == \
        ("81559, 81559", "9.0, 9.0", "580.159.03")


def test_machine_id_follows_host_and_hardware_id_does_not(monkeypatch):
    here = tracking.fingerprint()
    monkeypatch.setattr(tracking.socket, "gethostname", lambda: "another-host")
    there = tracking.fingerprint()
    assert there["machine_id"] != here["machine_id"] and there["hardware_id"] == here["hardware_id"]
    monkeypatch.setattr(tracking, "NUMERIC_ISA", ("sse4_2",))   # a machine without AVX
    assert tracking.fingerprint()["hardware_id"] != here["hardware_id"]


def test_params_hash_changes_with_any_setting():
    one = tracking.run_tags("e", "mlp", "digits", "t", "s", params={"seed": 7, "training.epochs": 4})
    two = tracking.run_tags("e", "mlp", "digits", "t", "s", params={"seed": 7, "training.epochs": 5})
    assert one["params_hash"] != two["params_hash"] and len(one["params_hash"]) == 12


def test_experiments_open_on_the_runs_view_and_links_say_so(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    fresh = tracking.experiment_id("image_classification/digits")
    old = mlflow.create_experiment("forecasting/santafe_laser", artifact_location=(tmp_path / "a").as_uri())
    assert mlflow.get_experiment(old).tags.get("mlflow.experimentKind") is None   # from before the tag
    assert tracking.experiment_id("forecasting/santafe_laser") == old
    for experiment in (fresh, old):
        assert mlflow.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    tracking.set_runs_view(fresh, "test_accuracy", higher_is_better=True)
    view = json.loads(mlflow.get_experiment(fresh).tags[tracking.VIEW_TAG])
    assert view["selectedColumns"][0] == "metrics.`test_accuracy`" and view["orderByAsc"] is False
    assert tracking.ui_links("http://127.0.0.1:5000/") == [
        f"forecasting/santafe_laser: http://127.0.0.1:5000/#/experiments/{old}/runs?workflowType=machine_learning",
        f"image_classification/digits: http://127.0.0.1:5000/#/experiments/{fresh}/runs"
        "?workflowType=machine_learning&viewStateShareKey=archlab"]


def test_dataset_hash_is_the_prepared_folders_then_the_raw_datas(tmp_path):
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare@digits:\n    cmd: python -m pipelines.prepare digits\n"
        "    outs:\n    - path: outputs/tfds/digits\n      hash: md5\n      md5: 0123abcd.dir\n")
    assert tracking.dataset_hash("digits", tmp_path) == "0123abcd"
    assert tracking.dataset_hash("fashion_mnist", tmp_path) == tracking.data_hash()


def test_a_dataset_two_machines_log_at_once_links_both_runs(tmp_path, monkeypatch):
    # the store looks a dataset up and then inserts it: when another machine inserts it in
    # between, the insert fails on the unique key (PostgreSQL's words below) and the retry links
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setattr(tracking.paths, "tfds_dir", lambda dataset: tmp_path / dataset)
    monkeypatch.setattr(tracking, "dataset_hash", lambda dataset: "e069a1a5ffff")
    experiment = tracking.experiment_id("image_classification/digits")
    rival = mlflow.MlflowClient().create_run(experiment).info.run_id
    real_log_input, calls = mlflow.log_input, []

    def racing_log_input(data, **kwargs):
        calls.append(data.name)
        if len(calls) == 1:
            real_log_input_for(rival, data, **kwargs)
            raise mlflow.exceptions.RestException({
                "error_code": "BAD_REQUEST", "message": "(psycopg2.errors.UniqueViolation) duplicate key "
                'value violates unique constraint "dataset_pk"'})
        real_log_input(data, **kwargs)

    def real_log_input_for(run_id, data, **kwargs):
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            real_log_input(data, **kwargs)

    monkeypatch.setattr(tracking.mlflow, "log_input", racing_log_input)
    with mlflow.start_run(experiment_id=experiment) as run:
        tracking.log_dataset("digits", {"train": 1437, "test": 360})
    assert calls == ["digits", "digits"]
    for run_id in (run.info.run_id, rival):
        inputs = mlflow.get_run(run_id).inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("digits", "e069a1a5")]
    tags = {t.key: t.value for t in mlflow.get_run(run.info.run_id).inputs.dataset_inputs[0].tags}
    assert tags["train_examples"] == "1437" and tags["mlflow.data.context"] == "training"


def test_other_store_errors_are_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setattr(tracking.paths, "tfds_dir", lambda dataset: tmp_path / dataset)
    monkeypatch.setattr(tracking, "dataset_hash", lambda dataset: "e069a1a5ffff")
    calls = []

    def failing_log_input(data, **kwargs):
        calls.append(data.name)
        raise mlflow.exceptions.MlflowException("RESOURCE_DOES_NOT_EXIST: run not found")

    monkeypatch.setattr(tracking.mlflow, "log_input", failing_log_input)
    with pytest.raises(mlflow.exceptions.MlflowException, match="run not found"):
        tracking.log_dataset("digits", {"train": 1437})
    assert calls == ["digits"]
