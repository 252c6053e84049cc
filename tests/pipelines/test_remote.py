"""The DVC remote's name comes from the environment; without it, one clear line."""

from __future__ import annotations

import subprocess
import sys

from pipelines import paths, remote


def test_push_without_a_remote_says_how_to_name_one(monkeypatch):
    monkeypatch.delenv(remote.VARIABLE, raising=False)
    result = subprocess.run([sys.executable, "-m", "pipelines.remote", "push"], cwd=paths.ROOT,
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: ARCHLAB_REMOTE is not set: name a folder or an ssh:// URL for the DVC remote, "
        "e.g. `make push ARCHLAB_REMOTE=/mnt/shared/archlab`")


def test_a_folder_remote_is_an_absolute_path(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(remote.VARIABLE, "shared/archlab")
    assert remote.url() == str(tmp_path / "shared" / "archlab")
    monkeypatch.setenv(remote.VARIABLE, "ssh://build@10.0.0.5/srv/archlab")
    assert remote.url() == "ssh://build@10.0.0.5/srv/archlab"
