"""MLflow tracking: where the store is, what every run is tagged with, run hand-over.

The store is `sqlite:///<repo>/mlflow/mlflow.db` with artifacts in `<repo>/mlflow/artifacts`
(absolute paths, outside DVC's temporary experiment copies), unless
`MLFLOW_TRACKING_URI` is set (a shared tracking server, say). One MLflow
experiment per task and dataset (`image_classification/fashion_mnist`), so the UI
puts every architecture on that task side by side. One run per archlab experiment:
the train stage opens it and leaves its id in `run.json`; evaluate and export add
to the same run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path

import mlflow
import yaml
from mlflow.models.utils import _save_example as _mlflow_save_example

from pipelines import config, paths

log = logging.getLogger("archlab.tracking")
RUN_FILE = "run.json"


def store_dir() -> Path:
    return paths.tracking_root() / "mlflow"


def default_uri() -> str:
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def user_uri() -> str | None:
    """MLFLOW_TRACKING_URI as the user set it (mlflow.set_tracking_uri also sets it)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri if uri and uri != default_uri() else None


def tracking_uri() -> str:
    return user_uri() or default_uri()


def configure() -> None:
    if user_uri() is None:
        store_dir().mkdir(exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri())


def experiment_name(task: str, dataset: str) -> str:
    """One MLflow experiment per task and dataset: every architecture on it side by side."""
    return f"{task}/{dataset}"


def experiment_id(name: str) -> str:
    """The MLflow experiment `name`, created with its artifacts under `mlflow/` if new."""
    configure()
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None if user_uri() else (store_dir() / "artifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        found = mlflow.get_experiment_by_name(name)    # created meanwhile by another stage
        if found is None:
            raise
        return found.experiment_id


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=paths.ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def data_hash() -> str:
    """The md5 that data.dvc records for the raw data folder."""
    try:
        doc = yaml.safe_load(paths.DATA_DVC.read_text())
        return str(doc["outs"][0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_tags() -> dict[str, str]:
    """Host, CPU, GPU and library versions: what makes runs on different machines comparable."""
    import keras
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    tags = {
        "host": socket.gethostname(),
        "cpu": _cpu_name(),
        "cpu_count": str(os.cpu_count()),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "cuda_version": str(build.get("cuda_version", "none")),
        "cudnn_version": str(build.get("cudnn_version", "none")),
        "python_version": platform.python_version(),
    }
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        tags["gpu"] = details.get("device_name", "unknown")
        tags["gpu_count"] = str(len(gpus))
        cc = details.get("compute_capability")
        tags["gpu_compute_capability"] = ".".join(map(str, cc)) if cc else "unknown"
        if shutil.which("nvidia-smi"):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True)
            found = out.returncode == 0 and out.stdout.strip()
            tags["gpu_driver"] = out.stdout.strip().splitlines()[0] if found else "unknown"
    else:
        tags["gpu"] = "none"
    return tags


def run_tags(experiment: str, architecture: str, dataset: str, task: str, stage: str) -> dict[str, str]:
    commit = _git("rev-parse", "HEAD") or "unknown"
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "archlab_experiment": experiment,
        "architecture": architecture,
        "dataset": dataset,
        "task": task,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "data_hash": data_hash(),
        "dvc_stage": stage,
        **machine_tags(),
    }


def start(run_dir: Path, *, mlflow_experiment: str, run_name: str, tags: dict[str, str]):
    """Open this experiment's run: the one recorded in `run_dir/run.json` if it still
    exists in the store, else a new one. Returns the active-run context manager."""
    configure()
    record = run_dir / RUN_FILE
    if record.exists():
        run_id = json.loads(record.read_text())["run_id"]
        try:
            mlflow.get_run(run_id)
            return mlflow.start_run(run_id=run_id, tags=tags)
        except mlflow.exceptions.MlflowException:
            log.warning("run %s is not in %s; starting a new run", run_id, tracking_uri())
    return mlflow.start_run(experiment_id=experiment_id(mlflow_experiment), run_name=run_name, tags=tags)


def record_run(run_dir: Path, task: str) -> None:
    """Leave the active run's id (and the experiment's task) for the later stages."""
    run = mlflow.active_run()
    (run_dir / RUN_FILE).write_text(json.dumps(
        {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
         "tracking_uri": tracking_uri(), "task": task}, indent=2) + "\n")


def _save_example_into_new_dir(mlflow_model, input_example, path, *args, **kwargs):
    os.makedirs(path, exist_ok=True)
    return _mlflow_save_example(mlflow_model, input_example, path, *args, **kwargs)


def log_keras_model(model, input_example) -> None:
    """Log a Keras 3 model (`mlflow.keras` flavour) with its signature and input example.

    mlflow.keras 3.17 writes the input example before it creates the model folder
    (FileNotFoundError on `input_example.json`); the folder is created first here.
    """
    import keras
    import mlflow.keras.save
    import tensorflow as tf
    from mlflow.models import infer_signature

    signature = infer_signature(input_example, model.predict(input_example, verbose=0))
    original = mlflow.keras.save._save_example
    mlflow.keras.save._save_example = _save_example_into_new_dir
    try:
        mlflow.keras.log_model(
            model, name="model", input_example=input_example, signature=signature,
            pip_requirements=[f"tensorflow-cpu=={tf.__version__}", f"keras=={keras.__version__}"])
    finally:
        mlflow.keras.save._save_example = original


def flat_params(exp) -> dict[str, object]:
    """Every setting of an experiment as dotted keys (for MLflow params), defaults included."""
    doc = exp.model_dump()
    doc["hyperparameters"] = config.hyperparameters(exp).model_dump()
    out: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif not isinstance(value, dict):
            out[prefix] = value

    walk("", doc)
    return out
