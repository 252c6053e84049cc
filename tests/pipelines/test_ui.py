"""The MLflow UI as a user opens it: `make ui`'s link in headless Chromium (Debian's `chromium`).

Real runs (the mlp and cnn stages on digits) in a scratch store, `mlflow ui` over it on a
free loopback port, then the page Chromium renders: the runs table with the test metrics
and the machine, and MLflow's compare view of both runs. The screenshots go to
`$ARCHLAB_SCREENSHOTS` when it is set (to look at them), else to the test's tmp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pipelines import evaluate, export, tracking, train
from pipelines.server import free_port

pytestmark = pytest.mark.ui
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def ui(workspace, params):
    """Two experiments' runs and the MLflow UI over their store; yields its base URL."""
    if CHROMIUM is None:
        if os.environ.get("ARCHLAB_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is not installed (apt-get install chromium) and ARCHLAB_REQUIRE_CHROMIUM=1")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    for name in params.experiments:
        train.train(name, params)
        evaluate.evaluate(name, params)
        export.export(name, params)
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri",
                               tracking.tracking_uri(), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not answer /health in 60 s")
        yield base
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _render(url: str, shot: Path) -> str:
    """The page's DOM once its scripts ran, and a screenshot of it."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=2000,700",
            "--virtual-time-budget=20000"]
    subprocess.run([*args, f"--screenshot={shot}", url], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True)
    return dom.stdout


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("ARCHLAB_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_make_ui_link_opens_the_runs_table_with_test_metrics(ui, tmp_path):
    links = dict(line.split(": ", 1) for line in tracking.ui_links(ui))
    link = links["image_classification/digits"]
    assert link.endswith("?workflowType=machine_learning&viewStateShareKey=archlab")
    shot = _shots(tmp_path) / "runs_table.png"
    dom = _render(link, shot)
    assert shot.stat().st_size > 30_000
    for text in ("test_accuracy", "test_loss", "train_seconds", "tflite_float32_size_bytes", "machine_id",
                 ">mlp<", ">cnn<", socket.gethostname()):
        assert text in dom, text
    import mlflow

    for run in mlflow.search_runs(experiment_names=["image_classification/digits"], output_format="list"):
        assert repr(run.data.metrics["test_accuracy"]) in dom   # each run's figure in its row
    assert "Judges" not in dom   # the training view, not the GenAI one (Traces, Sessions, Judges, ...)


def test_compare_view_of_two_runs_shows_their_metrics(ui, tmp_path):
    import mlflow

    experiment = mlflow.get_experiment_by_name("image_classification/digits")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    ids = json.dumps([r.info.run_id for r in runs], separators=(",", ":"))
    url = (f"{ui}/#/compare-runs?runs={urllib.parse.quote(ids)}"
           f"&experiments={urllib.parse.quote(json.dumps([experiment.experiment_id]))}")
    shot = _shots(tmp_path) / "compare_runs.png"
    dom = _render(url, shot)
    assert shot.stat().st_size > 30_000
    assert "Comparing 2 Runs from 1 Experiment" in dom
    for run in runs:   # each run in the comparison, and the metrics and params it compares
        assert run.info.run_id in dom and run.info.run_name in dom
    assert "test_accuracy" in dom and "architecture" in dom and "hidden_units" in dom
