"""Throwaway PostgreSQL-backed MLflow tracking servers on loopback, for tests.

    from tests.servers import tracking_server, tracking_servers

    @pytest.fixture(scope="module")
    def server():
        with tracking_server(auth=True) as s:     # free ports; everything removed at the end
            yield s

    with tracking_servers(False, True) as (plain, secured):   # several, started side by side
        ...

    def test_something(server, monkeypatch):
        for key, value in server.env().items():   # MLFLOW_TRACKING_URI (and the credentials)
            monkeypatch.setenv(key, value)
        ...

Each server is `pipelines.server` itself (PostgreSQL cluster, `mlflow server` with one worker)
in a fresh folder under the system temp dir: PostgreSQL runs as the `postgres` user when the
tests run as root, and that user cannot enter pytest's `tmp_path` (under /tmp/pytest-of-root,
mode 700), so `tmp_path` is not used. Without PostgreSQL the test is skipped, or fails when
ARCHLAB_REQUIRE_POSTGRES=1 (CI sets it), so CI never passes by skipping.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines import server as mlflow_server
from pipelines.runtime import StageError

REQUIRE_VARIABLE = "ARCHLAB_REQUIRE_POSTGRES"
ADMIN = "admin"


@dataclass(frozen=True)
class Server:
    """A running server: its tracking URI, its database and its folder."""

    uri: str                                  # what MLFLOW_TRACKING_URI is set to
    pg_uri: str                               # libpq URI of the tracking database: psycopg2.connect(pg_uri)
    root: Path
    port: int
    pg_port: int
    credentials: tuple[str, str] | None       # the admin's (username, password) with auth

    def env(self) -> dict[str, str]:
        """What a client's environment needs to reach this server."""
        env = {"MLFLOW_TRACKING_URI": self.uri}
        if self.credentials:
            env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = self.credentials
        return env

    def processes(self) -> set[int]:
        """The live processes of this server now: MLflow's process group, the postmaster and its children."""
        layout = mlflow_server.Layout(self.root)
        pids: set[int] = set()
        mlflow_pid = mlflow_server.running_pid(layout)
        if mlflow_pid is not None:
            pids.update(mlflow_server.group_members(mlflow_pid))
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((layout.data / "postmaster.pid").read_text().splitlines()[0])
            if mlflow_server.alive(postmaster):
                pids.add(postmaster)
                pids.update(pid for pid in _all_pids() if _parent(pid) == postmaster and mlflow_server.alive(pid))
        return pids


def require_postgres() -> None:
    """Skip the calling test without PostgreSQL and psycopg2, or fail under ARCHLAB_REQUIRE_POSTGRES=1."""
    try:
        mlflow_server.postgres_bin()
        mlflow_server.check_packages(auth=False)
    except StageError as e:
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{REQUIRE_VARIABLE}=1 but {e}", pytrace=False)
        pytest.skip(str(e))


@contextlib.contextmanager
def tracking_server(auth: bool = False) -> Iterator[Server]:
    """Start a server on free loopback ports (basic-auth with a random admin password if `auth`);
    stop it and PostgreSQL and remove its folder at the end."""
    require_postgres()
    root = Path(tempfile.mkdtemp(prefix="archlab-mlflow-"))
    credentials = (ADMIN, secrets.token_urlsafe(18)) if auth else None
    port = mlflow_server.free_port()
    try:
        uri = mlflow_server.start(root, port=port, credentials=credentials, workers=1)
        layout = mlflow_server.Layout(root)
        yield Server(uri=uri, pg_uri=mlflow_server.pg_uri(layout), root=root, port=port,
                     pg_port=mlflow_server.pg_port(layout), credentials=credentials)
    finally:
        try:
            mlflow_server.stop(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def tracking_servers(*auth: bool) -> Iterator[tuple[Server, ...]]:
    """One server per flag in `auth`, started side by side (a start mostly waits on imports and
    migrations), all torn down at the end."""
    require_postgres()
    managers = [tracking_server(flag) for flag in auth]
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(len(managers)) as pool:
            futures = [pool.submit(manager.__enter__) for manager in managers]
        servers, failure = [], None
        for manager, future in zip(managers, futures):
            try:
                servers.append(future.result())
                stack.push(manager.__exit__)
            except BaseException as e:
                failure = failure or e
        if failure is not None:
            raise failure
        yield tuple(servers)


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if fields[3] == "0A" and int(hex_port, 16) == port:      # 0A: LISTEN
                    found.add(_address(address, width))
    return found


def _address(hexed: str, width: int) -> str:
    import ipaddress

    raw = bytes.fromhex(hexed)
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))      # four host-order 32-bit words
    return str(ipaddress.IPv6Address(words))


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1
