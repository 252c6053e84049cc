"""`make venv`: `.venv` with the pinned dependencies and the TensorFlow build this machine can use.

    python3 -m pipelines.venv [--gpu auto|1|0] [--dry-run]
    python3 -m pipelines.venv --lock          # re-resolve both locks from pyproject.toml (PyPI)

TensorFlow comes in two builds that install the same `tensorflow/` package, so one
environment holds exactly one of them:

- `cuda`: `tensorflow[and-cuda]` (TensorFlow with the CUDA and cuDNN wheels it was built
  against), every version pinned by `requirements-cuda.lock`;
- `cpu`: `tensorflow-cpu`, pinned by `requirements.lock`.

`--gpu auto` (make's `GPU=auto`, the default) takes `cuda` where an NVIDIA GPU answers
`nvidia-smi -L`, else `cpu`; `--gpu 1` insists on `cuda` and stops with the reason where no
GPU answers; `--gpu 0` takes `cpu` on any machine. `.venv/.installed` records the build and a
hash of the lock and pyproject.toml: the same ones again install nothing, another build
replaces the whole environment.

Both locks are resolved by `uv pip compile` for CPython 3.11 on x86-64 Linux, each from
pyproject.toml with its build's extra, the CUDA one constrained by the CPU one so that every
package they share has the same version in both.

The standard library only: this runs before `.venv` exists (make runs it with `python3`).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = ".installed"
UV = "uv==0.13.9"   # puts the pinned set into .venv in about 25 s where pip takes 90 s
LOCKS = {"cpu": "requirements.lock", "cuda": "requirements-cuda.lock"}
EXTRAS = "test,bench"   # the test suite's and the benchmarks' dependencies, in every .venv
TARGET = ["--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"]   # what the locks are for


class NoGpu(Exception):
    """GPU=1 on a machine where no NVIDIA GPU answers: the reason, in one line."""


def gpus() -> list[str]:
    """The NVIDIA GPUs `nvidia-smi -L` lists; NoGpu with the reason when it lists none."""
    if shutil.which("nvidia-smi") is None:
        raise NoGpu("nvidia-smi is not on PATH (no NVIDIA driver)")
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NoGpu(f"nvidia-smi -L did not answer ({e})") from e
    listed = [line.strip() for line in result.stdout.splitlines() if line.startswith("GPU ")]
    if result.returncode != 0 or not listed:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise NoGpu(f"nvidia-smi -L found no GPU (exit {result.returncode}"
                    + (f": {said[0]}" if said else "") + ")")
    return listed


def build(choice: str) -> str:
    """`cuda` or `cpu` for make's GPU setting (auto, 1, 0)."""
    if choice == "0":
        return "cpu"
    try:
        gpus()
    except NoGpu:
        if choice == "1":
            raise
        return "cpu"
    return "cuda"


def fingerprint(kind: str, root: Path = ROOT) -> str:
    """What `.venv/.installed` holds: the build, and a hash of its lock and pyproject.toml."""
    digest = hashlib.sha256()
    for name in (LOCKS[kind], "pyproject.toml"):
        digest.update((root / name).read_bytes())
    return f"{kind} {digest.hexdigest()[:16]}\n"


def commands(kind: str, venv: Path = VENV) -> list[list[str]]:
    """The commands that make `venv` hold the `kind` build: venv, uv, the locked set."""
    bin_ = venv / "bin"
    # the interpreter the running one was made from: make's PATH puts .venv/bin first, and
    # the environment this may be replacing is removed before `-m venv` runs
    python = getattr(sys, "_base_executable", None) or sys.executable
    return [[python, "-m", "venv", str(venv)],
            [str(bin_ / "python"), "-m", "pip", "install", "--quiet", UV],
            # --compile-bytecode as pip does, or every stage recompiles TensorFlow
            [str(bin_ / "uv"), "pip", "install", "--quiet", "--compile-bytecode", "--python", str(bin_ / "python"),
             "-c", LOCKS[kind], "-e", f".[{EXTRAS},{kind}]"]]


def ensure(choice: str, *, root: Path = ROOT, venv: Path = VENV, dry_run: bool = False) -> str:
    """Make `venv` hold the chosen build's locked set, unless it already does; the build.
    `auto` keeps the build a finished `venv` has (a `GPU=0` environment on a GPU machine, or
    a CUDA one while nvidia-smi hiccups, is not swapped behind the user's back); 1 and 0 switch."""
    stamp = venv / STAMP
    current = stamp.read_text() if stamp.exists() else None
    installed = current.split()[0] if current else None
    kind = installed if choice == "auto" and installed in LOCKS else build(choice)
    wanted = fingerprint(kind, root)
    if current == wanted:
        return kind
    steps = commands(kind, venv)
    if dry_run:
        print("\n".join(" ".join(step) for step in steps))
        return kind
    if venv.exists():   # another build, another lock or a half-made one: never two TensorFlows
        was = current.split()[0] if current else "unfinished"
        print(f"{venv.name}: replacing the {was} environment with the {kind} one", file=sys.stderr)
        shutil.rmtree(venv)
    for step in steps:
        code = subprocess.run(step, cwd=root, check=False).returncode
        if code != 0:
            raise SystemExit(f"error: {' '.join(step[:4])} ... failed (exit {code}); {venv.name} is incomplete")
    stamp.write_text(wanted)
    return kind


def resolve(kind: str, *, root: Path = ROOT, uv: Path = VENV / "bin" / "uv") -> str:
    """`kind`'s lock as `uv pip compile` resolves it now from pyproject.toml: the CPU one
    preferring the versions of the current requirements.lock (uv's existing output file: a pin
    bumped in pyproject.toml moves what it must), the CUDA one held to those it shares with it."""
    import tempfile

    extras = [arg for extra in [*EXTRAS.split(","), kind] for arg in ("--extra", extra)]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / LOCKS[kind]
        if kind == "cpu":
            shutil.copyfile(root / LOCKS["cpu"], out)
        keep = ["-c", LOCKS["cpu"]] if kind != "cpu" else []
        result = subprocess.run([str(uv), "pip", "compile", "--quiet", "pyproject.toml", *extras, *TARGET,
                                 "--no-header", "--no-annotate", *keep, "-o", str(out)],
                                cwd=root, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"error: uv pip compile of the {kind} lock failed: {result.stderr.strip()[-500:]}")
        return out.read_text()


def pins(text: str) -> dict[str, str]:
    """A lock's `name==version` lines by normalised name (PEP 503)."""
    found = {}
    for line in text.splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Create .venv with the TensorFlow build this machine can use.")
    parser.add_argument("--gpu", choices=["auto", "1", "0"], default="auto",
                        help="auto: CUDA TensorFlow where nvidia-smi lists a GPU; 1: insist on it; 0: the CPU build")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser.add_argument("--lock", action="store_true", help="re-resolve both locks from pyproject.toml (needs PyPI)")
    parser.add_argument("--venv", type=Path, default=VENV, help="the environment's folder (default .venv)")
    args = parser.parse_args(argv)
    if args.lock:
        for kind in LOCKS:   # the CPU lock first: the CUDA one is constrained by it
            (ROOT / LOCKS[kind]).write_text(resolve(kind))
            print(f"{LOCKS[kind]}: {len(pins((ROOT / LOCKS[kind]).read_text()))} packages")
        return
    try:
        ensure(args.gpu, venv=args.venv, dry_run=args.dry_run)
    except NoGpu as e:
        raise SystemExit(f"error: GPU=1 wants TensorFlow with CUDA, but {e}; install the NVIDIA driver, "
                         "or use GPU=0 (or leave GPU unset) for the CPU build") from None


if __name__ == "__main__":
    main()
