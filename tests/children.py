"""Pipeline code run in a process of its own, in a scratch outputs tree: what a test cannot do
in its worker (Keras picks its backend once, at import; TensorFlow splits its CPU devices
before it starts; a SIGKILL; another host name).

`command(root, tfds, body, *args)` writes `body` after a preamble that points `paths` at
`root` (outputs under `root/experiments`, TFDS data from `tfds`) and leaves `args` in `args`;
with `environment`, that is what `subprocess` needs to run it, the child logging to
`root/mlflow.db` unless told otherwise. `run` runs it to its end, `start` in the background
(its output to `root/stdout` and `root/stderr`, read with `output`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines import paths

PREAMBLE = """\
import json, os, sys
from pathlib import Path
from pipelines import paths
root, tfds, args = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
paths.TFDS_DIR, paths.EXPERIMENTS = tfds, root / "experiments"
os.chdir(root)
"""


def command(root: Path, tfds: Path, body: str, *args: object) -> list[str]:
    """The command line running `body` in `root` (created) over the TFDS data in `tfds`."""
    root.mkdir(parents=True, exist_ok=True)
    script = root / "child.py"
    script.write_text(PREAMBLE + body)
    return [sys.executable, str(script), str(root), str(tfds), *map(str, args)]


def environment(root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(paths.ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", **extra}


def run(root: Path, tfds: Path, body: str, *args: object, timeout: int = 600, **env: str) -> dict:
    """Run `body` to its end; it must succeed and print one JSON object last, which is returned."""
    result = subprocess.run(command(root, tfds, body, *args), cwd=root, env=environment(root, **env),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def start(root: Path, tfds: Path, body: str, *args: object, **env: str) -> subprocess.Popen:
    """`body` in the background, its output to files (a pipe nobody reads fills and blocks it)."""
    cmd = command(root, tfds, body, *args)
    with open(root / "stdout", "w") as out, open(root / "stderr", "w") as err:
        return subprocess.Popen(cmd, cwd=root, env=environment(root, **env), stdout=out, stderr=err)


def output(root: Path, stream: str = "stderr") -> str:
    return (root / stream).read_text()
