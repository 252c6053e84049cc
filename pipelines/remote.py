"""`make push` / `make pull`: the data, trained models and TFLite files through a DVC remote.

    ARCHLAB_REMOTE=/mnt/shared/archlab python -m pipelines.remote push
    ARCHLAB_REMOTE=ssh://user@host/srv/archlab python -m pipelines.remote pull

The metrics and small results files travel in git; everything DVC caches (raw data,
prepared datasets, models, TFLite files, pictures) travels through a DVC remote named by
`ARCHLAB_REMOTE`: a folder (a mounted share) or an `ssh://` URL (dvc-ssh). It is written
into `.dvc/config.local` (not committed: each machine names its own way to the remote).
`push` sends the cache and DVC's run cache; `pull` fetches what `dvc.lock` names, so a
second machine gets the first one's results and a clean `dvc status` without training.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from pipelines import paths, runtime

NAME = "archlab"
VARIABLE = "ARCHLAB_REMOTE"


def url() -> str:
    value = os.environ.get(VARIABLE, "").strip()
    if not value:
        raise runtime.StageError(f"{VARIABLE} is not set: name a folder or an ssh:// URL for the DVC remote, "
                                 f"e.g. `make push {VARIABLE}=/mnt/shared/archlab`")
    if "://" not in value:
        value = str(Path(value).expanduser().resolve())
    return value


def _dvc(root: Path, *args: str) -> None:
    code = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=False).returncode
    if code != 0:
        raise runtime.StageError(f"dvc {' '.join(args)} failed (exit {code})")


def configure(root: Path = paths.ROOT) -> str:
    """Name the remote in `.dvc/config.local`; a folder remote is created if missing."""
    target = url()
    if "://" not in target:
        Path(target).mkdir(parents=True, exist_ok=True)
    _dvc(root, "remote", "add", "--local", "--force", NAME, target)
    return target


def push(root: Path = paths.ROOT) -> None:
    target = configure(root)
    _dvc(root, "push", "--run-cache", "--remote", NAME)
    print(f"pushed the DVC cache and run cache to {target}")


def pull(root: Path = paths.ROOT) -> None:
    target = configure(root)
    _dvc(root, "pull", "--run-cache", "--remote", NAME)
    print(f"pulled from {target}; `dvc status` shows what, if anything, is left to run")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Push or pull DVC's cache through the remote ${VARIABLE}.")
    parser.add_argument("command", choices=["push", "pull"])
    args = parser.parse_args(argv)
    runtime.run_stage(push if args.command == "push" else pull)


if __name__ == "__main__":
    main()
