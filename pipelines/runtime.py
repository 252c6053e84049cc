"""Process set-up shared by every stage: logging, seeds, determinism, atomic outputs.

Nothing here runs at import time; each stage calls `setup(seed)` once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("archlab")


class StageError(RuntimeError):
    """A failure a user can act on: reported as one line, exit status 1."""


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("absl", "mlflow", "alembic", "urllib3", "git", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def setup(seed: int, *, deterministic: bool = True, cpu_devices: int | None = None) -> None:
    """Seed Python, NumPy, TF and the Keras backend, and make TF ops deterministic
    (identical runs on CPU) unless XLA is wanted, which does not keep them. `cpu_devices`
    splits the CPU into that many logical devices (a tf.distribute strategy over them); it
    must come before TensorFlow runs its first op."""
    import keras
    import tensorflow as tf

    if cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        except RuntimeError as e:   # the runtime has started in this process
            if len(tf.config.list_logical_devices("CPU")) != cpu_devices:
                raise StageError(f"cannot split the CPU into {cpu_devices} devices: {e}") from None
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        from tensorflow.python.framework.config import disable_op_determinism

        disable_op_determinism()


def deterministic() -> bool:
    """Whether TF's op determinism is on in this process."""
    from tensorflow.python.framework.config import is_op_determinism_enabled

    return is_op_determinism_enabled()


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy (`float32`, `mixed_bfloat16`, ...) for what is built inside."""
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def ensure_backend(wanted: str) -> None:
    """Run this command under the Keras backend `wanted`: if another is loaded, start the
    same command again (same arguments) with KERAS_BACKEND set; Keras reads it once, at import."""
    import os

    import keras

    if keras.backend.backend() == wanted:
        return
    import importlib.util

    if importlib.util.find_spec(wanted) is None:
        raise StageError(f"the {wanted} backend is not installed (pip install {wanted})")
    log.info("restarting under the %s backend (was %s)", wanted, keras.backend.backend())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "KERAS_BACKEND": wanted})


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Write a stage's outputs into a staging folder; move them into `dest` only on success.

    On any exception the staging folder is removed and `dest` is left untouched,
    so a failed stage never leaves half-written outputs.
    """
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    dest.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        target = dest / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        item.rename(target)
    staging.rmdir()


# When set (the end-to-end test sets it), each command writes the project modules it imported
# to `<folder>/<pid>.json` as it exits: what `dvc.yaml` must list as the stage's code.
IMPORTS_LOG = "ARCHLAB_IMPORTS_LOG"


def run_stage(main: Callable[[], None], *, backend: str | None = None) -> None:
    """Run a stage's main (under the Keras `backend`, if one is named: `ensure_backend`):
    known failures become one `error: ...` line and exit 1."""
    import os

    setup_logging()
    if os.environ.get(IMPORTS_LOG):
        import atexit

        atexit.register(_log_imports, Path(os.environ[IMPORTS_LOG]), list(sys.argv))
    try:
        if backend is not None:
            ensure_backend(backend)
        main()
    except (StageError, FileNotFoundError, ValueError) as e:   # datasets.RawDataError is a ValueError
        log.debug("stage failed", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def _log_imports(folder: Path, argv: list[str]) -> None:
    import json
    import os

    folder.mkdir(parents=True, exist_ok=True)
    modules = sorted(m for m in sys.modules if m.split(".")[0] in ("models", "pipelines", "edge"))
    (folder / f"{os.getpid()}.json").write_text(json.dumps({"argv": argv, "modules": modules}))


def save_keras(model, path: Path) -> None:
    """`model.save`, made byte-reproducible: the same weights give the same file.

    A `.keras` file is a zip whose `metadata.json` holds the save time, whose
    `config.json` numbers shared objects by their memory address, and whose entries
    carry timestamps; all are fixed here, so DVC records the same hash for the same
    model and `dvc.lock` does not change between identical runs.
    """
    import json
    import zipfile

    raw = path.with_name(path.name + ".tmp.keras")
    model.save(raw)
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in sorted(src.infolist(), key=lambda i: i.filename):
            data = src.read(info.filename)
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta, sort_keys=True).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, data)
    raw.unlink()


def _renumber_shared_objects(node, ids: dict):
    """Replace each `shared_object_id` (an id() address) by its order of appearance."""
    if isinstance(node, dict):
        return {k: ids.setdefault(v, len(ids)) if k == "shared_object_id" else _renumber_shared_objects(v, ids)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_renumber_shared_objects(v, ids) for v in node]
    return node


def write_json(path: Path, values: dict) -> None:
    import json

    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
