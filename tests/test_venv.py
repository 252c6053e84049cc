"""`make venv`'s choice of TensorFlow build (pipelines/venv.py), with stand-ins for
nvidia-smi on PATH; and both locks resolving from pyproject.toml (needs PyPI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import venv

ROOT = Path(__file__).resolve().parent.parent
H200 = "GPU 0: NVIDIA H200 (UUID: GPU-5e1e8a57-1b7c-4b4e-9e0e-2f1a3c4d5e6f)"
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
             "Make sure that the latest NVIDIA driver is installed and running.")


def nvidia_smi(folder: Path, listing: str | None, code: int = 0) -> str:
    """A PATH whose nvidia-smi prints `listing` and exits with `code` (None: no nvidia-smi)."""
    folder.mkdir(exist_ok=True)
    if listing is not None:
        (folder / "listing").write_text(listing + "\n")
        script = folder / "nvidia-smi"
        script.write_text(f"#!/bin/sh\ncat '{folder / 'listing'}'\nexit {code}\n")
        script.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


@pytest.mark.parametrize(("listing", "code", "auto"), [(H200, 0, "cuda"), (NO_DRIVER, 9, "cpu"), (None, 0, "cpu")])
def test_auto_takes_cuda_only_where_a_gpu_answers_and_0_takes_cpu_anywhere(tmp_path, monkeypatch, listing, code, auto):
    monkeypatch.setenv("PATH", nvidia_smi(tmp_path / "bin", listing, code))
    assert venv.build("auto") == auto
    assert venv.build("0") == "cpu"


@pytest.mark.parametrize(("listing", "code", "reason"), [
    (None, 0, "nvidia-smi is not on PATH (no NVIDIA driver)"),
    (NO_DRIVER, 9, "nvidia-smi -L found no GPU (exit 9: NVIDIA-SMI has failed because it couldn't communicate"),
    ("No devices were found", 6, "nvidia-smi -L found no GPU (exit 6: No devices were found)")])
def test_gpu_1_without_a_gpu_stops_with_the_reason_before_anything_is_made(tmp_path, listing, code, reason):
    env = {**os.environ, "PATH": nvidia_smi(tmp_path / "bin", listing, code)}
    result = subprocess.run([sys.executable, "-m", "pipelines.venv", "--gpu", "1", "--venv", str(tmp_path / "env")],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: GPU=1 wants TensorFlow with CUDA, but " + reason)
    assert lines[0].endswith("or use GPU=0 (or leave GPU unset) for the CPU build")
    assert not (tmp_path / "env").exists()


def test_make_run_with_gpu_1_on_a_cpu_machine_fails_at_the_start(tmp_path):
    env = {**os.environ, "PATH": nvidia_smi(tmp_path / "bin", None) + ":" + str(Path(sys.executable).parent)}
    stamp = ROOT / ".venv" / venv.STAMP
    before = stamp.read_text() if stamp.exists() else None
    result = subprocess.run(["make", "--no-print-directory", "run", "GPU=1"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode != 0
    assert "error: GPU=1 wants TensorFlow with CUDA, but nvidia-smi is not on PATH" in result.stderr
    assert (stamp.read_text() if stamp.exists() else None) == before   # the environment untouched


@pytest.mark.parametrize(("listing", "lock", "extras"), [(H200, "requirements-cuda.lock", ".[test,bench,cuda]"),
                                                         (None, "requirements.lock", ".[test,bench,cpu]")])
def test_the_build_picks_its_lock_and_extra(tmp_path, monkeypatch, capsys, listing, lock, extras):
    monkeypatch.setenv("PATH", nvidia_smi(tmp_path / "bin", listing))
    venv.ensure("auto", venv=tmp_path / "env", dry_run=True)
    install = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert install[install.index("-c") + 1] == lock and install[-1] == extras and install[-2] == "-e"


def test_another_build_replaces_the_environment_and_the_same_one_installs_nothing(tmp_path, monkeypatch, capsys):
    env = tmp_path / "env"
    (env / "lib").mkdir(parents=True)
    (env / "lib" / "tensorflow_cpu-2.21.0.dist-info").mkdir()
    (env / venv.STAMP).write_text(venv.fingerprint("cpu"))
    ran: list[list[str]] = []

    def record(step, **kwargs):
        ran.append(step)
        if step[1:3] == ["-m", "venv"]:
            Path(step[3]).mkdir()
        return subprocess.CompletedProcess(step, 0)

    monkeypatch.setattr(venv.subprocess, "run", record)
    monkeypatch.setattr(venv, "build", lambda choice: "cpu")
    assert venv.ensure("auto", venv=env) == "cpu" and ran == []   # up to date: nothing runs
    monkeypatch.setattr(venv, "build", lambda choice: "cuda")
    assert venv.ensure("auto", venv=env) == "cpu" and ran == []   # auto keeps the build it has
    assert venv.ensure("1", venv=env) == "cuda"
    assert [step[1:3] for step in ran] == [["-m", "venv"], ["-m", "pip"], ["pip", "install"]]
    assert not (env / "lib").exists()   # the CPU build's files went with the old environment
    assert (env / venv.STAMP).read_text() == venv.fingerprint("cuda")
    assert "replacing the cpu environment with the cuda one" in capsys.readouterr().err


def test_a_failed_install_leaves_no_stamp(tmp_path, monkeypatch):
    env = tmp_path / "env"
    monkeypatch.setattr(venv, "build", lambda choice: "cpu")
    monkeypatch.setattr(venv.subprocess, "run", lambda step, **kwargs: subprocess.CompletedProcess(
        step, 2 if step[1:3] == ["pip", "install"] else 0))
    with pytest.raises(SystemExit, match="failed .exit 2.; env is incomplete"):
        venv.ensure("auto", venv=env)
    assert not (env / venv.STAMP).exists()   # the next `make venv` starts it over


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_each_lock_is_what_pyproject_resolves_to(kind):
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not in this environment (make venv installs it)")
    resolved = venv.pins(venv.resolve(kind, uv=uv))
    committed = venv.pins((ROOT / venv.LOCKS[kind]).read_text())
    assert resolved == committed
    assert ("tensorflow-cpu" in committed) == (kind == "cpu") and ("tensorflow" in committed) == (kind == "cuda")
    if kind == "cuda":
        assert any(name.startswith("nvidia-cudnn") for name in committed)
        shared = set(committed) & set(venv.pins((ROOT / venv.LOCKS["cpu"]).read_text()))
        cpu = venv.pins((ROOT / venv.LOCKS["cpu"]).read_text())
        assert all(committed[name] == cpu[name] for name in shared)


@pytest.mark.parametrize(("dists", "requirement"), [
    ({"tensorflow": ["tensorflow_cpu"]}, "tensorflow-cpu==2.21.0"),
    ({"tensorflow": ["tensorflow"], "nvidia": ["nvidia-cudnn-cu12"]}, "tensorflow[and-cuda]==2.21.0"),
    ({"tensorflow": ["tensorflow"]}, "tensorflow==2.21.0")])
def test_the_logged_model_requires_the_build_installed(monkeypatch, dists, requirement):
    from importlib import metadata

    from pipelines import tracking

    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}

    monkeypatch.setattr(metadata, "packages_distributions", lambda: dists)
    monkeypatch.setattr(metadata, "distributions", lambda: [Dist(n) for names in dists.values() for n in names])
    assert tracking.tensorflow_requirement("2.21.0") == requirement


def test_this_environment_names_its_own_build():
    from pipelines import tracking

    stamp = ROOT / ".venv" / venv.STAMP
    if not stamp.exists():
        pytest.skip("not made by make venv")
    kind = stamp.read_text().split()[0]
    assert tracking.tensorflow_requirement("2.21.0") == {"cpu": "tensorflow-cpu==2.21.0",
                                                          "cuda": "tensorflow[and-cuda]==2.21.0"}[kind]
