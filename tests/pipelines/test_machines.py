"""Several machines, tested on one: a real PostgreSQL-backed tracking server on loopback, two
"machines" (processes in their own UTS namespace, each with its own host name) running the
train, evaluate and export stages against it at once, and a third, offline one whose local
store is synced to the server afterwards. Then `pipelines.compare` lays them side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest

from pipelines import compare, sync
from tests import children
from tests.servers import REQUIRE_VARIABLE, tracking_server

pytestmark = pytest.mark.slow

# One machine's work: the tiny mlp's train, evaluate and export stages in a scratch outputs
# tree, logging wherever MLFLOW_TRACKING_URI points.
MACHINE = """
from pipelines import config, evaluate, export, train
from tests.conftest import tiny_params
doc = tiny_params()
doc["experiments"]["mlp"]["seed"] = int(args[0])
params = config.validate(doc)
train.train("mlp", params)
evaluate.evaluate("mlp", params)
export.export("mlp", params)
"""


def _can_rename_hosts() -> bool:
    probe = subprocess.run(["unshare", "--uts", "--", "hostname", "probe"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def server():
    with tracking_server() as running:
        yield running


def _machine(host: str, root: Path, tfds: Path, seed: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', host,
               *children.command(root, tfds, MACHINE, seed)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=root,
                          env=children.environment(root, **env))


def test_two_machines_log_at_once_an_offline_one_syncs_and_compare_lays_them_side_by_side(
        server, tfds_dir, tmp_path):
    if not _can_rename_hosts():
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail("`unshare --uts` is refused (it needs root): cannot give the machines their own host names")
        pytest.skip("`unshare --uts` needs root")
    offline = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'gamma' / 'mlflow.db'}"}
    machines = {"alpha": (7, server.env()), "beta": (7, server.env()), "gamma": (8, offline)}
    with ThreadPoolExecutor(len(machines)) as pool:   # all three at once: alpha and beta log concurrently
        done = {host: pool.submit(_machine, host, tmp_path / host, tfds_dir, seed, env)
                for host, (seed, env) in machines.items()}
    for host, future in done.items():
        result = future.result()
        assert result.returncode == 0, f"{host}:\n{result.stderr[-3000:]}"

    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("image_classification/digits")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["host"] for r in runs) == ["alpha", "beta"]   # none lost, each its own
    (a, b) = sorted(runs, key=lambda r: r.data.tags["host"])
    assert a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time   # they overlapped
    assert len({r.data.tags["machine_id"] for r in runs}) == 2
    assert len({r.data.tags["hardware_id"] for r in runs}) == 1           # one machine underneath
    for run in runs:   # every stage's figures reached the run
        for key in ("train_seconds", "test_accuracy", "tflite_float32_size_bytes", "tflite_int8_latency_ms"):
            assert key in run.data.metrics, (run.data.tags["host"], key)
        local = json.loads((tmp_path / run.data.tags["host"] / "experiments" / "mlp" / "train" / "run.json")
                           .read_text())
        assert local["run_id"] == run.info.run_id

    # the offline machine's store, uploaded twice: the second adds nothing
    first = sync.sync(offline["MLFLOW_TRACKING_URI"], server.uri)
    again = sync.sync(offline["MLFLOW_TRACKING_URI"], server.uri)
    assert first.created == 1 and first.metric_points > 10 and first.artifacts > 5 and first.models == 1
    assert (again.created, again.updated, again.metric_points, again.artifacts, again.models) == \
        (0, 0, 0, 0, 0)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["host"] for r in runs) == ["alpha", "beta", "gamma"]

    out = tmp_path / "compare"
    before = mlflow.get_tracking_uri()
    try:
        compare.main(["--tracking-uri", server.uri, "--reference", "alpha", "--out", str(out)])
    finally:   # --tracking-uri sets the process's MLflow URI: the server stops after this module
        mlflow.set_tracking_uri(before)
    page = (out / "machines.md").read_text()
    side = page.split("## Not comparable")[0]
    assert "alpha" in side and "beta" in side and "gamma" not in side
    apart = page.split("## Not comparable")[1].split("## Machines")[0]
    assert "gamma" in apart and "params_hash" in apart            # another seed: not compared
    figures = json.loads((out / "machines.json").read_text())
    by_host = {row["host"]: row for row in figures["side_by_side"]}
    # one machine underneath, deterministic single-process training: the same weights, Δ 0
    assert by_host["beta"]["delta"] == 0.0 and by_host["alpha"]["train_ratio"] == 1.0
