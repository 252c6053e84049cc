"""Machines side by side: real MLflow sqlite stores with runs of two machines, read by `compare`."""

from __future__ import annotations

import json
import time

import mlflow
import pandas as pd
import pytest
from PIL import Image

from pipelines import compare, tracking

COMMIT = "c0ffee1234567890c0ffee1234567890c0ffee12"
DATA = "da7a0000aaaa1111bbbb2222cccc3333"
OTHER_DATA = "d1ffe4e7aaaa1111bbbb2222cccc3333"
PARAMS = "9a7a5000aaaa1111"
OTHER_PARAMS = "0e1e4000aaaa1111"
ZETA = {"machine_id": "5e7a0c11", "host": "zeta", "cpu": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz",
        "cpu_isa": "avx2,avx512f,amx_tile", "cpu_count": "2", "memory_gb": "8", "gpu": "none", "gpu_count": "0",
        "keras_backend": "tensorflow", "precision": "float32", "xla": "off", "onednn": "on", "devices": "CPU:0",
        "tensorflow_version": "2.20.0"}
ALPHA = {**ZETA, "machine_id": "a1fa9b22", "host": "alpha", "cpu": "AMD EPYC 7B13", "cpu_isa": "avx2",
         "cpu_count": "16", "memory_gb": "128", "gpu": "NVIDIA H200", "gpu_count": "1", "precision": "mixed_bfloat16",
         "xla": "on", "devices": "CPU:0,GPU:0"}
CNN = {"archlab_experiment": "cnn", "architecture": "cnn", "task": "image_classification", "dataset": "digits",
       "headline_metric": "test_accuracy", "higher_is_better": "true"}
ESN = {"archlab_experiment": "esn", "architecture": "esn", "task": "forecasting", "dataset": "mackey_glass",
       "headline_metric": "test_nrmse", "higher_is_better": "false"}
GRU = {**ESN, "archlab_experiment": "gru", "architecture": "gru"}


def _timings(train_seconds: float, throughput: float, tflite_ms: float, keras_ms: float) -> dict[str, float]:
    return {"train_seconds": train_seconds, "train_examples_per_second": throughput,
            "tflite_float32_latency_ms": tflite_ms, "keras_latency_ms": keras_ms}


def _log(experiment: dict, machine: dict, metrics: dict[str, float], *, status: str = "FINISHED",
         mlflow_experiment: str | None = None, **identity: str) -> str:
    """One pipeline run as train, evaluate and export leave it; returns its id."""
    tags = {**experiment, **machine, "git_commit": COMMIT, "git_dirty": "false", "data_hash": DATA,
            "params_hash": PARAMS, **identity}
    name = mlflow_experiment or tracking.experiment_name(experiment["task"], experiment["dataset"])
    with mlflow.start_run(experiment_id=tracking.experiment_id(name), run_name=experiment["archlab_experiment"]) as run:
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics)
        if status != "FINISHED":
            mlflow.end_run(status)
    time.sleep(0.005)     # distinct start times: "latest" is well defined
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """The store's URI, its folder and the ids of the runs that must not be read."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(folder)
        _log(CNN, ZETA, {"test_accuracy": 0.50, **_timings(999, 1, 9, 9)})
        _log(CNN, ZETA, {"test_accuracy": 0.60, **_timings(999, 1, 9, 9)})
        _log(CNN, ALPHA, {"test_accuracy": 0.99, **_timings(40, 3000, 0.2, 2.0)}, data_hash=OTHER_DATA)
        _log(CNN, ZETA, {"test_accuracy": 0.90, **_timings(100, 1000, 0.5, 2.0)})
        _log(CNN, ALPHA, {"test_accuracy": 0.93, **_timings(50, 2500, 0.25, 3.0)})
        _log(ESN, ZETA, {"test_nrmse": 0.30, **_timings(999, 1, 9, 9)})
        _log(ESN, ZETA, {"test_nrmse": 0.20, **_timings(999, 1, 9, 9)})
        _log(ESN, ALPHA, {"test_nrmse": 0.01, **_timings(5, 900, 0.1, 0.1)}, params_hash=OTHER_PARAMS)
        _log(ESN, ZETA, {"test_nrmse": 0.10, **_timings(10, 400, 0.1, 1.0)})
        _log(ESN, ALPHA, {"test_nrmse": 0.125, **_timings(30, 100, 0.3, 0.5)})
        _log(GRU, ALPHA, {"test_nrmse": 0.40, **_timings(60, 50, 1.0, 1.0)})
        ignored = [   # enough runs on alpha to make it the default reference, were they counted
            _log(CNN, ALPHA, {"test_accuracy": 0.11}, status="FAILED"),
            _log(CNN, ALPHA, {"train_seconds": 12.0}),                            # no headline metric yet
            _log({k: v for k, v in CNN.items() if k != "archlab_experiment"} | {"archlab_experiment": "report"},
                 ALPHA, {"train_seconds": 1.0}, mlflow_experiment="leaderboard"),
            _log(CNN, {k: v for k, v in ALPHA.items() if k != "machine_id"}, {"test_accuracy": 0.12}),
        ]
    return {"uri": uri, "folder": folder, "ignored": ignored}


@pytest.fixture
def uri(store, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(store["folder"])     # a new experiment's artifacts go to ./mlruns
    return store["uri"]


def _tables(md: str) -> dict[str, list[dict[str, str]]]:
    """Each `## heading`'s table as rows of column -> cell."""
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in md.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("|") and heading and not set(line) <= set("|-: "):
            tables.setdefault(heading, []).append([cell.strip() for cell in line.strip("|").split("|")])
    return {h: [dict(zip(rows[0], row)) for row in rows[1:]] for h, rows in tables.items()}


def _run(out, *args: str) -> str:
    compare.main(["--out", str(out), *args])
    return (out / "machines.md").read_text()


def _machines_runs(uri: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(compare.MLFLOW_EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_each_machine_sits_beside_the_reference_with_its_delta_and_ratios(store, uri, tmp_path):
    md = _run(tmp_path / "out", "--tracking-uri", uri, "--no-log")
    assert "Reference machine: `5e7a0c11` (zeta), the machine with the most runs (6)." in md
    tables = _tables(md)
    cnn = {row["host"]: row for row in tables["image_classification/digits"]}
    assert cnn["zeta"]["machine"] == "5e7a0c11 (reference)" and cnn["zeta"]["runs"] == "3"
    assert [cnn["zeta"][c] for c in ("test_accuracy", "Δ", "train s", "train ×")] == ["0.9000", "+0.0000", "100.0",
                                                                                      "1.00×"]
    alpha = cnn["alpha"]
    assert [alpha[c] for c in ("test_accuracy", "Δ", "train s", "train ×", "examples/s ×", "tflite float32 ms ×",
                               "keras ms ×", "runs")] == ["0.9300", "+0.0300", "50.0", "0.50×", "2.50×", "0.50×",
                                                          "1.50×", "1"]
    assert alpha["precision"] == "mixed_bfloat16" and alpha["backend"] == "tensorflow +XLA +oneDNN"
    assert alpha["description"] == "AMD EPYC 7B13, avx2, NVIDIA H200"
    assert cnn["zeta"]["description"] == "Intel Xeon Platinum 8480+, avx2,avx512f,amx_tile, no GPU"
    esn = {row["host"]: row for row in tables["forecasting/mackey_glass"]}
    assert set(esn) == {"zeta", "alpha"} and esn["zeta"]["test_nrmse"] == "0.1000" and esn["zeta"]["runs"] == "3"
    assert [esn["alpha"][c] for c in ("test_nrmse", "Δ", "train ×", "examples/s ×", "tflite float32 ms ×",
                                      "keras ms ×")] == ["0.1250", "+0.0250", "3.00×", "0.25×", "3.00×", "0.50×"]
    assert "test_nrmse: lower is better." in md and "test_accuracy: higher is better." in md

    apart = {row["experiment"]: row for row in tables["Not comparable"]}
    assert set(apart) == {"cnn", "esn", "gru"}
    assert apart["cnn"]["host"] == "alpha" and apart["cnn"]["value"] == "0.9900"
    assert apart["cnn"]["reason"] == "data_hash d1ffe4e7 ≠ da7a0000"
    assert apart["esn"]["value"] == "0.0100" and apart["esn"]["reason"] == "params_hash 0e1e4000 ≠ 9a7a5000"
    assert apart["gru"]["reason"] == "no run on the reference machine 5e7a0c11"
    side_by_side = tables["image_classification/digits"] + tables["forecasting/mackey_glass"]
    shown = {row.get("test_accuracy", row.get("test_nrmse")) for row in side_by_side}
    assert not {"0.9900", "0.0100", "0.4000"} & shown

    machines = {row["host"]: row for row in tables["Machines"]}
    assert machines["alpha"]["cores"] == "16" and machines["alpha"]["gpu"] == "NVIDIA H200"
    assert machines["zeta"]["runs"] == "6" and machines["alpha"]["runs"] == "5"

    doc = json.loads((tmp_path / "out" / "machines.json").read_text())
    assert doc["reference"] == "5e7a0c11"
    rows = {(r["experiment"], r["host"]): r for r in doc["side_by_side"]}
    assert rows[("cnn", "alpha")]["delta"] == pytest.approx(0.03) and rows[("esn", "alpha")]["train_ratio"] == 3.0
    every_id = {r["run_id"] for section in ("side_by_side", "not_comparable") for r in doc[section]}
    assert len(every_id) == 7 and not every_id & set(store["ignored"])
    with Image.open(tmp_path / "out" / "machines.png") as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 500
    assert not (tmp_path / "out.partial").exists()
    assert _machines_runs(uri) == []        # --no-log


def test_the_reference_can_be_a_host_or_a_machine_id(uri, tmp_path):
    md = _run(tmp_path / "host", "--tracking-uri", uri, "--no-log", "--reference", "alpha")
    assert "Reference machine: `a1fa9b22` (alpha), chosen with --reference." in md
    tables = _tables(md)
    cnn = {row["host"]: row for row in tables["image_classification/digits"]}
    assert cnn["alpha"]["machine"] == "a1fa9b22 (reference)" and cnn["alpha"]["Δ"] == "+0.0000"
    assert [cnn["zeta"][c] for c in ("Δ", "train ×", "examples/s ×", "keras ms ×")] == ["-0.0300", "2.00×", "0.40×",
                                                                                         "0.67×"]
    assert {row["experiment"] for row in tables["forecasting/mackey_glass"]} == {"esn", "gru"}
    apart = {row["experiment"]: row["reason"] for row in tables["Not comparable"]}
    assert apart == {"cnn": "data_hash d1ffe4e7 ≠ da7a0000", "esn": "params_hash 0e1e4000 ≠ 9a7a5000"}
    assert _run(tmp_path / "id", "--tracking-uri", uri, "--no-log", "--reference", "a1fa9b22") == md


def test_an_unknown_reference_fails_in_one_line_naming_the_known_machines(uri, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--tracking-uri", uri, "--out", str(tmp_path / "out"), "--reference", "nowhere"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: unknown reference machine 'nowhere'; known machines: "
                   "5e7a0c11 (zeta, 6 runs), a1fa9b22 (alpha, 5 runs)")
    assert not (tmp_path / "out").exists()


def test_a_store_without_archlab_runs_fails_in_one_line(tmp_path, monkeypatch, capsys):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty)
    monkeypatch.chdir(tmp_path)
    with mlflow.start_run(experiment_id=tracking.experiment_id("leaderboard")):
        mlflow.log_metric("test_accuracy", 0.5)
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--out", str(tmp_path / "out")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: no archlab runs in {empty}")


def test_the_comparison_is_logged_to_the_machines_experiment(uri, tmp_path):
    before = len(_machines_runs(uri))
    _run(tmp_path / "out", "--tracking-uri", uri)
    runs = _machines_runs(uri)
    assert len(runs) == before + 1
    run = runs[0]
    assert run.data.tags["reference_machine"] == "5e7a0c11" and run.data.tags["reference_host"] == "zeta"
    assert run.data.metrics["side_by_side_runs"] == 4 and run.data.metrics["not_comparable_runs"] == 3
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == set(compare.FILES)


def test_view_gives_the_reports_rows_from_a_client_or_the_runs_read_page_by_page(uri):
    client = mlflow.MlflowClient(tracking_uri=uri)
    paged = compare.runs(client, page_size=2)
    assert len(paged) == 11 and paged["run_id"].is_unique
    pd.testing.assert_frame_equal(paged, compare.runs(client))
    rows = compare.view(client, "zeta")
    pd.testing.assert_frame_equal(rows, compare.view(paged, "zeta"))
    assert list(rows["experiment"]) == ["esn", "esn", "cnn", "cnn"]     # by task, the reference machine first
    assert list(rows["reference"]) == [True, False, True, False]
    assert rows.set_index(["experiment", "host"]).loc[("cnn", "alpha"), "throughput_ratio"] == pytest.approx(2.5)


def test_ties_in_runs_go_to_the_first_host_alphabetically():
    frame = pd.DataFrame({"machine_id": ["m2", "m1", "m2", "m1"], "host": ["beta", "gamma", "beta", "gamma"],
                          "run_id": ["a", "b", "c", "d"]})
    assert compare.reference_machine(frame) == ("m2", "the machine with the most runs (2)")
    assert compare.reference_machine(frame.iloc[1:])[0] == "m1"
