"""The shared tracking server: real PostgreSQL, real `mlflow server`, real clients.

Two servers for the module (one plain, one with basic-auth), started once, side by side.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
import uuid

import psycopg2
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipelines import server as mlflow_server
from pipelines.runtime import StageError
from tests.servers import listening_addresses, tracking_servers


@pytest.fixture(scope="module")
def servers():
    with tracking_servers(False, True) as both:
        yield both


@pytest.fixture(scope="module")
def plain(servers):
    return servers[0]


@pytest.fixture(scope="module")
def secured(servers):
    """Basic-auth: the admin is `secured.credentials`."""
    return servers[1]


@pytest.fixture(scope="module")
def logged_run(plain, tmp_path_factory):
    """A run logged through the plain server: two params, a metric at two steps, a text artifact."""
    client = MlflowClient(tracking_uri=plain.uri)
    experiment_id = client.create_experiment(f"server-test/{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id, run_name="round-trip")
    run_id = run.info.run_id
    client.log_param(run_id, "learning_rate", "0.01")
    client.log_param(run_id, "architecture", "lstm")
    client.log_metric(run_id, "val_accuracy", 0.5, step=0)
    client.log_metric(run_id, "val_accuracy", 0.75, step=1)
    notes = tmp_path_factory.mktemp("artifact") / "notes.txt"
    notes.write_text("logged through the tracking server\n")
    client.log_artifact(run_id, str(notes))
    client.set_terminated(run_id)
    return run_id


def _cli(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    """Run `python -m pipelines.server ARGV` in this process: (exit status, stdout, error lines)."""
    status = 0
    try:
        mlflow_server.main(argv)
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, [line for line in err.splitlines() if line.startswith("error:")]


def _status(url: str, credentials: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(credentials).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_run_logged_through_the_server_reads_back_with_its_params_metrics_and_artifact(plain, logged_run, tmp_path):
    client = MlflowClient(tracking_uri=plain.uri)
    run = client.get_run(logged_run)
    assert run.data.params == {"learning_rate": "0.01", "architecture": "lstm"}
    assert run.data.metrics == {"val_accuracy": 0.75}
    assert [m.value for m in client.get_metric_history(logged_run, "val_accuracy")] == [0.5, 0.75]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [a.path for a in client.list_artifacts(logged_run)] == ["notes.txt"]
    local = client.download_artifacts(logged_run, "notes.txt", str(tmp_path))
    assert open(local).read() == "logged through the tracking server\n"
    stored = list((plain.root / "artifacts").rglob("notes.txt"))
    assert len(stored) == 1 and logged_run in stored[0].parts


def test_the_run_is_stored_in_postgresql(plain, logged_run):
    with psycopg2.connect(plain.pg_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, status FROM runs WHERE run_uuid = %s", (logged_run,))
        assert cur.fetchall() == [("round-trip", "FINISHED")]
        cur.execute("SELECT key, value FROM params WHERE run_uuid = %s ORDER BY key", (logged_run,))
        assert cur.fetchall() == [("architecture", "lstm"), ("learning_rate", "0.01")]
        cur.execute("SELECT step, value FROM metrics WHERE run_uuid = %s AND key = 'val_accuracy' ORDER BY step",
                    (logged_run,))
        assert cur.fetchall() == [(0, 0.5), (1, 0.75)]
    conn.close()


def test_the_server_and_postgresql_listen_on_loopback_only(plain):
    assert listening_addresses(plain.port) == {"127.0.0.1"}
    assert listening_addresses(plain.pg_port) == {"127.0.0.1"}


def test_the_server_runs_with_telemetry_disabled(plain):
    pid = int((plain.root / "server.pid").read_text())
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    assert b"MLFLOW_DISABLE_TELEMETRY=true" in environ


def test_postgresql_refuses_the_mlflow_role_without_its_password(plain):
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host="127.0.0.1", port=plain.pg_port, user="mlflow", dbname="mlflow", passfile="/dev/null")


def test_basic_auth_lets_the_admin_log_a_run(secured, monkeypatch):
    for key, value in secured.env().items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=secured.uri)
    experiment_id = client.create_experiment(f"auth-test/{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "loss", 0.25)
    assert client.get_run(run_id).data.metrics == {"loss": 0.25}


@pytest.mark.parametrize("who", ["nobody", "wrong password"])
def test_basic_auth_refuses_a_request_without_the_right_password(secured, who):
    credentials = None if who == "nobody" else (secured.credentials[0], "not-the-password-at-all")
    url = f"{secured.uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(url, credentials) == 401
    assert _status(url, secured.credentials) == 200


def test_an_mlflow_client_with_a_wrong_password_gets_an_error(secured, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", secured.credentials[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password-at-all")
    with pytest.raises(MlflowException):
        MlflowClient(tracking_uri=secured.uri).search_experiments(max_results=1)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_start_refuses_a_non_loopback_host_without_allow_remote_and_starts_nothing(host, tmp_path, capsys):
    root = tmp_path / "server"
    status, _, errors = _cli(["start", "--host", host, "--port", str(mlflow_server.free_port()), "--root", str(root)],
                             capsys)
    assert status == 1 and len(errors) == 1 and "--allow-remote" in errors[0]
    assert not root.exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_allow_remote(host):
    mlflow_server.check_host(host, allow_remote=False)


def test_start_with_auth_refuses_without_both_credentials(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    root = tmp_path / "server"
    status, _, errors = _cli(["start", "--auth", "--port", str(mlflow_server.free_port()), "--root", str(root)], capsys)
    assert status == 1 and len(errors) == 1 and "MLFLOW_TRACKING_PASSWORD" in errors[0]
    assert not root.exists()


def test_start_refuses_a_busy_port(plain, tmp_path, capsys):
    root = tmp_path / "server"
    status, _, errors = _cli(["start", "--port", str(plain.port), "--root", str(root)], capsys)
    assert status == 1 and len(errors) == 1 and "busy" in errors[0]
    assert not root.exists()


def test_a_missing_postgresql_is_one_line_that_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(mlflow_server, "PG_DIR", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StageError, match="apt-get install postgresql"):
        mlflow_server.postgres_bin()


def test_stop_leaves_no_process_behind_and_start_finds_the_runs_again(plain, logged_run, capsys):
    before = plain.processes()
    assert len(before) >= 2                               # mlflow server and the postmaster at least
    status, _, errors = _cli(["stop", "--root", str(plain.root)], capsys)
    assert (status, errors) == (0, [])
    assert not any(mlflow_server.alive(pid) for pid in before)
    assert plain.processes() == set()
    assert listening_addresses(plain.port) == set() and listening_addresses(plain.pg_port) == set()
    assert _cli(["status", "--root", str(plain.root)], capsys)[0] == 3

    status, out, errors = _cli(["start", "--port", str(plain.port), "--workers", "1", "--root", str(plain.root)],
                               capsys)
    assert (status, errors) == (0, []) and out.strip() == plain.uri
    assert json.loads((plain.root / "server.json").read_text())["postgres_port"] == plain.pg_port
    assert MlflowClient(tracking_uri=plain.uri).get_run(logged_run).data.params["architecture"] == "lstm"


def test_the_auth_config_holds_no_password(secured):
    config = (secured.root / "basic_auth.ini").read_text()
    assert secured.credentials[1] not in config
    assert "mlflow_auth" in config and "passfile=" in config
    assert os.stat(secured.root / ".pgpass").st_mode & 0o077 == 0
