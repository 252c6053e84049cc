"""A shared MLflow tracking server on its own PostgreSQL cluster, bound to loopback.

    python -m pipelines.server start [--host 127.0.0.1] [--port 5000] [--auth] [--allow-remote]
                                     [--workers 2] [--root DIR]
    python -m pipelines.server status [--root DIR]        # prints the URI; exit 3 if not running
    python -m pipelines.server stop [--root DIR]
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000     # what `start` prints

Everything lives under the root (default `<repo>/mlflow/server`, gitignored):
`postgres/` (the cluster's data directory), `postgres.log`, `.pgpass`, `database.json` (the
cluster's port), `artifacts/` (the server's artifact store: clients read and write it through
the server as `mlflow-artifacts:`), `server.log`, `server.pid`, `server.json`, and with `--auth`
`basic_auth.ini` and `.secret_key`.

PostgreSQL: the newest `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package; else
`pg_ctl` on PATH) creates the cluster on the first start. It listens on 127.0.0.1 only, on a
free port picked then and kept in `database.json`; its unix socket sits in the data directory.
The role `mlflow` owns the databases `mlflow` (the tracking store) and `mlflow_auth` (the
basic-auth users) and logs in over TCP with a random password (scram-sha-256) kept in `.pgpass`
(mode 600), which the URIs name (`?passfile=`), so no password appears in a URI, a config file
or a command line. The superuser `postgres` has no password: it is reachable only through the
socket (trust), which only the data directory's owner (and root) can open.

Running as root: `initdb` and `postgres` refuse to run as root, so they run as Debian's
`postgres` system user (`runuser -u postgres --`), which owns the data directory. That user
must be able to reach the root: `start` adds the search bit (o+x) to the root itself and
refuses, naming the folder, when a parent blocks the way (pytest's `/tmp/pytest-of-root` is mode
700: tests put their roots under /tmp, see tests/servers.py). Parents are never chmod-ed.
As any other user, PostgreSQL runs as that user.

`--auth` runs MLflow's basic-auth app (`--app-name basic-auth`). The admin is the user in
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (what MLflow clients send); there is no
default password. MLflow creates the admin on the first `--auth` start and keeps its password
afterwards (change it with MLflow's update-password API): `start` checks that the server accepts
the given credentials and otherwise stops it again. Other users get READ by default.

The server is bound to 127.0.0.1; a host outside loopback needs `--allow-remote` (and should
use `--auth`). MLflow answers 403 to a Host header other than localhost or a private address
unless the name is in `--allowed-hosts` (e.g. `tracking.example.org,tracking.example.org:5000`):
a team that reaches the server by name passes it there.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipelines import paths, runtime
from pipelines.runtime import StageError

log = logging.getLogger("archlab.server")

DEFAULT_ROOT = paths.ROOT / "mlflow" / "server"
DEFAULT_PORT = 5000
PG_DIR = Path("/usr/lib/postgresql")
DB_USER = "postgres"            # the system user that runs PostgreSQL when we are root
ROLE = "mlflow"
DATABASE = "mlflow"
AUTH_DATABASE = "mlflow_auth"
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20
MIN_PASSWORD_LENGTH = 12        # MLflow's basic-auth password policy


class Layout:
    """Where each file of a server lives under its root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "postgres"               # the cluster (owned by PostgreSQL's user)
        self.pg_log = root / "postgres.log"
        self.passfile = root / ".pgpass"            # role mlflow's password, mode 600
        self.database = root / "database.json"      # {"port": the cluster's port}
        self.artifacts = root / "artifacts"         # --artifacts-destination
        self.log = root / "server.log"
        self.pid = root / "server.pid"
        self.state = root / "server.json"           # the running server's URI, ports, auth
        self.auth_ini = root / "basic_auth.ini"     # MLFLOW_AUTH_CONFIG_PATH
        self.secret_key = root / ".secret_key"      # MLFLOW_FLASK_SERVER_SECRET_KEY, mode 600


# --- where we may listen --------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    if not (allow_remote or is_loopback(host)):
        raise StageError(f"--host {host} is not a loopback address: the tracking server would be reachable "
                         "from the network; pass --allow-remote (with --auth) if that is what you want")


def client_host(host: str) -> str:
    """The address a local client uses for a server bound to `host`."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # TIME_WAIT leftovers do not count
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- credentials ---------------------------------------------------------------------------

def credentials_from_env() -> tuple[str, str]:
    """The admin's (username, password) from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if not (user and password):
        raise StageError("--auth needs the admin's credentials: set MLFLOW_TRACKING_USERNAME and "
                         "MLFLOW_TRACKING_PASSWORD (there is no default password)")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StageError(f"MLFLOW_TRACKING_PASSWORD must have at least {MIN_PASSWORD_LENGTH} characters "
                         "(MLflow's basic-auth policy)")
    return user, password


def check_packages(auth: bool) -> None:
    """The Python packages the server needs beyond MLflow: psycopg2, and Flask-WTF for basic-auth."""
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None:
        raise StageError("the server needs psycopg2 in this environment: pip install psycopg2-binary")
    if auth and importlib.util.find_spec("flask_wtf") is None:
        raise StageError("--auth needs Flask-WTF (MLflow's basic-auth app checks CSRF with it): pip install Flask-WTF")


# --- PostgreSQL ----------------------------------------------------------------------------

def postgres_bin(version: str | None = None) -> Path:
    """The PostgreSQL binaries: `version`'s if given (an existing cluster's), else the newest."""
    if version is not None:
        found = PG_DIR / version / "bin"
        if (found / "pg_ctl").exists():
            return found
        raise StageError(f"the cluster was created by PostgreSQL {version}, which is not installed: "
                         f"apt-get install postgresql-{version}")
    versions = [d for d in PG_DIR.glob("*/bin") if (d / "initdb").exists() and d.parent.name.isdigit()]
    if versions:
        return max(versions, key=lambda d: int(d.parent.name))
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    raise StageError("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin): "
                     "apt-get install postgresql")


def _as_db_user(cmd: list[str]) -> list[str]:
    """`cmd` as the user that runs PostgreSQL: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", DB_USER, "--", *cmd]
    return ["setpriv", f"--reuid={DB_USER}", f"--regid={DB_USER}", "--init-groups", "--", *cmd]


def _db_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(DB_USER)
    except KeyError:
        raise StageError(f"running as root needs the '{DB_USER}' system user to run PostgreSQL "
                         "(apt-get install postgresql creates it), or run as another user") from None


def _give_to_db_user(path: Path) -> None:
    user = _db_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _run_db(cmd: list[str], what: str | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` as PostgreSQL's user; with `what`, a failure is a StageError naming it."""
    out = subprocess.run(_as_db_user(cmd), cwd="/", capture_output=True, text=True)
    if what and out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()
        raise StageError(f"{what} failed: {detail[-1] if detail else f'exit {out.returncode}'}")
    return out


def _check_reachable(root: Path) -> None:
    """Make sure PostgreSQL's user can reach `root` (see the module docstring)."""
    if _db_user() is None:
        return
    root.chmod(root.stat().st_mode | 0o011)
    if _run_db(["test", "-x", str(root)]).returncode == 0:
        return
    for folder in [*reversed(root.parents), root]:
        if _run_db(["test", "-x", str(folder)]).returncode != 0:
            mode = oct(folder.stat().st_mode & 0o777)[2:]
            raise StageError(f"the '{DB_USER}' user cannot enter {folder} (mode {mode}) to reach {root}: "
                             "choose a --root under a folder others may enter")


def pg_port(layout: Layout) -> int:
    return int(json.loads(layout.database.read_text())["port"])


def pg_uri(layout: Layout, database: str = DATABASE, driver: str = "") -> str:
    """The URI of `database` for libpq (psycopg2.connect, psql), or with `driver="+psycopg2"`
    for SQLAlchemy (MLflow's stores: SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3).
    The password comes from `.pgpass`."""
    passfile = urllib.parse.quote(str(layout.passfile))
    return f"postgresql{driver}://{ROLE}@127.0.0.1:{pg_port(layout)}/{database}?passfile={passfile}"


def _pg_running(bindir: Path, layout: Layout) -> bool:
    return _run_db([str(bindir / "pg_ctl"), "status", "-D", str(layout.data)]).returncode == 0


def _pg_version(layout: Layout) -> str:
    return (layout.data / "PG_VERSION").read_text().strip()


def _pg_start(bindir: Path, layout: Layout) -> None:
    port = pg_port(layout)
    if not port_free("127.0.0.1", port):
        raise StageError(f"PostgreSQL's port {port} on 127.0.0.1 is busy: stop what uses it "
                         f"or set another 'port' in {layout.database}")
    if not layout.pg_log.exists():
        layout.pg_log.touch(mode=0o600)
    _give_to_db_user(layout.pg_log)
    out = _run_db([str(bindir / "pg_ctl"), "start", "-D", str(layout.data), "-l", str(layout.pg_log),
                   "-w", "-t", "60", "-o", f"-p {port}"])
    if out.returncode != 0:
        raise StageError(f"PostgreSQL did not start; see {layout.pg_log}")


def _pg_stop(bindir: Path, layout: Layout) -> None:
    _run_db([str(bindir / "pg_ctl"), "stop", "-D", str(layout.data), "-m", "fast", "-w", "-t", "60"],
            "stopping PostgreSQL")


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def _init_cluster(bindir: Path, layout: Layout) -> None:
    """A new cluster in `layout.data`: loopback only, role `mlflow`, its two databases."""
    import psycopg2

    socket_path = layout.data / ".s.PGSQL.65535"
    if len(str(socket_path)) > 107:
        raise StageError(f"the root {layout.root} is too long a path for PostgreSQL's socket; choose a shorter --root")
    log.info("creating a PostgreSQL %s cluster in %s", bindir.parent.name, layout.data)
    layout.data.mkdir(mode=0o700)
    _give_to_db_user(layout.data)
    password = secrets.token_urlsafe(24)
    port = free_port()
    try:
        _run_db([str(bindir / "initdb"), "-D", str(layout.data), "-U", "postgres", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C"], "initdb")
        settings = ("\n# archlab: TCP on loopback only; the socket in the data directory\n"
                    f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                    f"unix_socket_directories = '{layout.data}'\n")
        with open(layout.data / "postgresql.conf", "a") as conf:
            conf.write(settings)
        (layout.data / "pg_hba.conf").write_text(
            "# archlab: the superuser through the socket only; role mlflow over loopback with its password\n"
            "local all all trust\n"
            f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n")
        _write_private(layout.passfile, f"127.0.0.1:*:*:{ROLE}:{password}\n")
        layout.database.write_text(json.dumps({"port": port}, indent=2) + "\n")
        _pg_start(bindir, layout)
        try:
            conn = psycopg2.connect(host=str(layout.data), port=port, user="postgres", dbname="postgres")
            conn.autocommit = True          # CREATE DATABASE runs outside a transaction
            try:
                with conn.cursor() as cur:
                    cur.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", (password,))
                    for name in (DATABASE, AUTH_DATABASE):
                        cur.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
            finally:
                conn.close()
        except BaseException:
            _pg_stop(bindir, layout)
            raise
    except BaseException:
        shutil.rmtree(layout.data, ignore_errors=True)
        layout.database.unlink(missing_ok=True)
        layout.passfile.unlink(missing_ok=True)
        raise


def _ensure_postgres(layout: Layout) -> tuple[Path, bool]:
    """Create the cluster if new and start it if stopped: (binaries, whether we started it)."""
    if not (layout.data / "PG_VERSION").exists() or not layout.database.exists():
        bindir = postgres_bin()
        _check_reachable(layout.root)
        if layout.data.exists():
            raise StageError(f"{layout.data} exists but holds no complete cluster: remove it and start again")
        _init_cluster(bindir, layout)
        return bindir, True
    bindir = postgres_bin(_pg_version(layout))
    if _pg_running(bindir, layout):
        return bindir, False
    _check_reachable(layout.root)
    _pg_start(bindir, layout)
    return bindir, True


# --- the MLflow server ----------------------------------------------------------------------

def alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process; reaps it if it is our child."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (the server and its workers)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def running_pid(layout: Layout) -> int | None:
    """The pid of this root's MLflow server if it runs; a stale pid file is removed."""
    try:
        pid = int(layout.pid.read_text())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if alive(pid) and b"mlflow" in cmdline:
        return pid
    layout.pid.unlink(missing_ok=True)
    layout.state.unlink(missing_ok=True)
    return None


def _auth_header(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


def _get(url: str, credentials: tuple[str, str] | None = None) -> int:
    """The HTTP status of GET `url` (0 if nothing answers)."""
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", _auth_header(credentials))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def _write_auth_config(layout: Layout, username: str) -> None:
    database_uri = pg_uri(layout, AUTH_DATABASE, "+psycopg2").replace("%", "%%")     # configparser interpolates %
    layout.auth_ini.write_text(
        "# Written by `python -m pipelines.server start --auth`; the admin's password is not here:\n"
        "# the server gets it as MLFLOW_AUTH_ADMIN_PASSWORD (from MLFLOW_TRACKING_PASSWORD) and uses it\n"
        "# only to create the admin on the first start.\n"
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n")
    if not layout.secret_key.exists():
        _write_private(layout.secret_key, secrets.token_hex(32))


def _server_env(layout: Layout, credentials: tuple[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # MLflow's job runner (seven huey consumers, for GenAI trace scoring) is no use to archlab
    # and heavy on a small machine; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true brings it back.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if credentials:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(layout.auth_ini)
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = layout.secret_key.read_text().strip()
        env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"] = credentials
    return env


def _kill_group(pid: int) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after STOP_TIMEOUT_S."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            alive(pid)
            if not group_members(pid):
                return
            time.sleep(0.1)
    raise StageError(f"processes {group_members(pid)} of the MLflow server (group {pid}) did not stop")


def _wait_until_up(process: subprocess.Popen, base: str, layout: Layout) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StageError(f"mlflow server exited with status {process.returncode}; see {layout.log}")
        if _get(f"{base}/health") == 200:
            return
        time.sleep(0.3)
    raise StageError(f"mlflow server did not answer {base}/health within {STARTUP_TIMEOUT_S} s; see {layout.log}")


def start(root: Path = DEFAULT_ROOT, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          credentials: tuple[str, str] | None = None, allow_remote: bool = False, workers: int = 2,
          allowed_hosts: str | None = None) -> str:
    """Start PostgreSQL and the MLflow server under `root` (basic-auth with `credentials`);
    returns the tracking URI."""
    check_host(host, allow_remote)
    if not (is_loopback(host) or credentials):
        log.warning("binding %s without --auth: anyone who reaches port %d can read and write every run", host, port)
    layout = Layout(root.resolve())
    pid = running_pid(layout) if layout.root.exists() else None
    if pid is not None:
        uri = json.loads(layout.state.read_text())["uri"]
        raise StageError(f"a server from {layout.root} already runs at {uri} (pid {pid}); stop it first")
    if not port_free(host, port):
        raise StageError(f"port {port} on {host} is busy: pick another with --port")
    check_packages(bool(credentials))
    postgres_bin()
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.artifacts.mkdir(exist_ok=True)
    bindir, started_pg = _ensure_postgres(layout)
    if credentials:
        _write_auth_config(layout, credentials[0])
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", pg_uri(layout, driver="+psycopg2"),
           "--artifacts-destination", str(layout.artifacts), "--serve-artifacts",
           "--host", host, "--port", str(port), "--workers", str(workers)]
    if credentials:
        cmd += ["--app-name", "basic-auth"]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    base = f"http://{client_host(host)}:{port}"
    with open(layout.log, "ab") as server_log:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=server_log, stderr=subprocess.STDOUT,
                                   env=_server_env(layout, credentials), cwd=layout.root, start_new_session=True)
    layout.pid.write_text(f"{process.pid}\n")
    try:
        _wait_until_up(process, base, layout)
        who = urllib.parse.urlencode({"username": credentials[0]}) if credentials else ""
        if credentials and _get(f"{base}/api/2.0/mlflow/users/get?{who}", credentials) != 200:
            raise StageError("the server rejects MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD: the admin "
                             "keeps the password of the first --auth start (change it with MLflow's "
                             "update-password API); stopped")
    except BaseException:
        _kill_group(process.pid)
        layout.pid.unlink(missing_ok=True)
        if started_pg:
            _pg_stop(bindir, layout)
        raise
    layout.state.write_text(json.dumps(
        {"uri": base, "pid": process.pid, "host": host, "port": port, "auth": bool(credentials),
         "postgres_port": pg_port(layout)}, indent=2) + "\n")
    log.info("MLflow server (pid %d) at %s, PostgreSQL on 127.0.0.1:%d, log %s",
             process.pid, base, pg_port(layout), layout.log)
    return base


def stop(root: Path = DEFAULT_ROOT) -> None:
    """Stop the MLflow server and then PostgreSQL under `root`; nothing running is fine."""
    layout = Layout(root.resolve())
    pid = running_pid(layout) if layout.root.exists() else None
    if pid is not None:
        _kill_group(pid)
        log.info("stopped the MLflow server (pid %d)", pid)
    layout.pid.unlink(missing_ok=True)
    layout.state.unlink(missing_ok=True)
    if (layout.data / "PG_VERSION").exists():
        bindir = postgres_bin(_pg_version(layout))
        if _pg_running(bindir, layout):
            _pg_stop(bindir, layout)
            log.info("stopped PostgreSQL (%s)", layout.data)


def status(root: Path = DEFAULT_ROOT) -> dict | None:
    """The running server's state (`server.json`), or None."""
    layout = Layout(root.resolve())
    if not layout.root.exists() or running_pid(layout) is None:
        return None
    return json.loads(layout.state.read_text())


def _cli(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.server", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    begin = commands.add_parser("start", help="start PostgreSQL and the MLflow server; print the tracking URI")
    begin.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    begin.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    begin.add_argument("--auth", action="store_true",
                       help="basic-auth; admin from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")
    begin.add_argument("--allow-remote", action="store_true", help="allow a --host outside loopback")
    begin.add_argument("--workers", type=int, default=2, help="server worker processes (default: 2)")
    begin.add_argument("--allowed-hosts", help="Host header values MLflow accepts besides localhost and private "
                                               "addresses, comma-separated (the name clients use)")
    for name, text in (("stop", "stop the MLflow server and PostgreSQL"), ("status", "print the tracking URI if up")):
        commands.add_parser(name, help=text)
    for sub in commands.choices.values():
        sub.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"server folder (default: {DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    if args.command == "start":
        check_host(args.host, args.allow_remote)
        credentials = credentials_from_env() if args.auth else None
        print(start(args.root, host=args.host, port=args.port, credentials=credentials,
                    allow_remote=args.allow_remote, workers=args.workers, allowed_hosts=args.allowed_hosts))
    elif args.command == "stop":
        stop(args.root)
    else:
        state = status(args.root)
        if state is None:
            print(f"not running ({args.root})")
            sys.exit(3)
        print(state["uri"])


def main(argv: list[str] | None = None) -> None:
    runtime.run_stage(lambda: _cli(argv))


if __name__ == "__main__":
    main()
