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

import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path

import mlflow
import yaml
from mlflow.models.utils import _save_example as _mlflow_save_example

from pipelines import config, paths

log = logging.getLogger("archlab.tracking")
RUN_FILE = "run.json"
SYSTEM_METRICS_SECONDS = 5   # MLflow's system-metrics sampling (its default, 10 s, misses short stages)
DATASET_LOG_ATTEMPTS = 3   # tries at logging a dataset input two machines may be logging at once


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


# MLflow 3's UI opens an experiment on its GenAI view unless this tag names the training kind.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(name: str) -> str:
    """The MLflow experiment `name`, created with its artifacts under `mlflow/` if new, and
    tagged so the UI opens on its runs table."""
    configure()
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        location = None if user_uri() else (store_dir() / "artifacts").as_uri()
        try:
            return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except mlflow.exceptions.MlflowException:
            found = mlflow.get_experiment_by_name(name)    # created meanwhile by another stage
            if found is None:
                raise
    if any(found.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):   # a store from before the tag
        for key, value in EXPERIMENT_KIND.items():
            mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


# The runs table's columns, as a view the UI loads from the experiment's tag
# `mlflow.sharedViewState.<key>` when the link says `viewStateShareKey=<key>` (MLflow 3's
# runs table shows no metric columns until one picks them).
VIEW_KEY = "archlab"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"


def set_runs_view(experiment: str, headline: str, higher_is_better: bool) -> None:
    """The experiment's runs table: the headline metric (best first), test loss, training time
    and the float32 TFLite file's size and latency, the architecture and the machine."""
    metrics = [headline, "test_loss", "train_seconds", "train_examples_per_second", "tflite_float32_size_bytes",
               "tflite_float32_latency_ms"]
    view = json.dumps({"selectedColumns": [*(f"metrics.`{m}`" for m in metrics), "params.`architecture`",
                                           "tags.`host`", "tags.`machine_id`"],
                       "orderByKey": f"metrics.`{headline}`", "orderByAsc": not higher_is_better})
    if mlflow.get_experiment(experiment).tags.get(VIEW_TAG) != view:
        try:
            mlflow.MlflowClient().set_experiment_tag(experiment, VIEW_TAG, view)
        except mlflow.exceptions.MlflowException as error:
            if not _duplicate_key(error):   # another machine set the same view at the same moment
                raise


def ui_links(base: str) -> list[str]:
    """A link to each experiment's runs table: `workflowType=machine_learning` (the training
    view even for an experiment without the kind tag) and, where set, archlab's columns."""
    configure()
    links = []
    for e in mlflow.search_experiments(order_by=["name"]):
        if e.name == "Default":
            continue
        view = f"&viewStateShareKey={VIEW_KEY}" if VIEW_TAG in e.tags else ""
        links.append(f"{e.name}: {base.rstrip('/')}/#/experiments/{e.experiment_id}/runs"
                     f"?workflowType=machine_learning{view}")
    return links


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


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


# Instruction-set extensions that choose which kernels oneDNN and Eigen run, and so the order
# of floating-point sums: two machines that differ here may train to different weights.
NUMERIC_ISA = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
               "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


def _caches() -> str:
    """The first CPU's data and unified caches (`L1d 48K, L2 2048K, L3 491520K`): Eigen sizes
    its matrix-product blocks from them, and so the order of a product's sums."""
    found = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            found.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    return ", ".join(found) or "unknown"


def _gpus() -> list[dict[str, str]]:
    """Each NVIDIA GPU's name, memory, compute capability and driver (nvidia-smi), or []."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,compute_cap,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    keys = ("name", "memory_mb", "compute_capability", "driver")
    return [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in out.stdout.splitlines()
            if out.returncode == 0 and line.strip()]


def onednn() -> bool:
    """Whether TensorFlow runs its oneDNN kernels (on by default on x86; TF_ENABLE_ONEDNN_OPTS=0)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def fingerprint() -> dict[str, str]:
    """What this machine is, as far as numerics and speed go: host, CPU model and the
    instruction sets that change numerics, cores, memory, each GPU, CUDA/cuDNN, TensorFlow,
    Keras and its backend, oneDNN. `machine_id` is a short hash of all of it (the host name
    included, so two hosts of one kind are two machines); `hardware_id` leaves out the host
    and the software, so machines of one kind share it."""
    import keras
    import psutil
    import tensorflow as tf

    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    build = tf.sysconfig.get_build_info()
    gpus = _gpus()
    tags = {
        "host": socket.gethostname(),
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_model_id": f"family {cpu.get('cpu family', '?')} model {cpu.get('model', '?')} "
                        f"stepping {cpu.get('stepping', '?')}",
        "cpu_caches": _caches(),
        "cpu_isa": ",".join(f for f in NUMERIC_ISA if f in flags) or platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "memory_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "gpu": ", ".join(g["name"] for g in gpus) or "none",
        "gpu_count": str(len(gpus)),
        "cuda_version": str(build.get("cuda_version", "none")),
        "cudnn_version": str(build.get("cudnn_version", "none")),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "onednn": "on" if onednn() else "off",
        "python_version": platform.python_version(),
    }
    if gpus:
        tags["gpu_memory_mb"] = ", ".join(g["memory_mb"] for g in gpus)
        tags["gpu_compute_capability"] = ", ".join(g["compute_capability"] for g in gpus)
        tags["gpu_driver"] = gpus[0]["driver"]
    hardware = ("cpu", "cpu_model_id", "cpu_caches", "cpu_isa", "cpu_count", "memory_gb", "gpu", "gpu_memory_mb")
    tags["hardware_id"] = _short_hash({k: tags.get(k) for k in hardware})
    tags["machine_id"] = _short_hash(tags)
    return tags


def _short_hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def dataset_hash(dataset: str, root: Path = paths.ROOT) -> str:
    """The md5 DVC recorded for the prepared dataset (`outputs/tfds/<dataset>` in dvc.lock),
    else the raw data's (data.dvc)."""
    path = root / "dvc.lock"
    for _ in range(10 if path.exists() else 0):   # another lane's DVC may be rewriting it in place
        try:
            lock = _lock(path, path.stat().st_mtime_ns)
            for stage_name, stage_lock in lock.get("stages", {}).items():
                if stage_name.partition("@")[2] == dataset:
                    for out in stage_lock.get("outs", []):
                        if out.get("path") == f"outputs/tfds/{dataset}":
                            return str(out["md5"]).removesuffix(".dir")
            if lock.get("stages"):
                break   # a whole file without the dataset's stage
        except (OSError, AttributeError, KeyError, yaml.YAMLError):
            pass
        time.sleep(0.3)
    return data_hash()


@functools.lru_cache(maxsize=4)
def _lock(path: Path, mtime_ns: int) -> dict:
    """dvc.lock, parsed once per version (LibYAML: the pure-Python parser takes 0.8 s on it)."""
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def run_tags(experiment: str, architecture: str, dataset: str, task: str, stage: str,
             params: dict | None = None) -> dict[str, str]:
    """The machine's fingerprint and what a run is of: experiment, commit, data, params."""
    commit = _git("rev-parse", "HEAD") or "unknown"
    # a run rewrites dvc.lock and the results files kept in git: not the code's dirtiness
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!outputs"))
    tags = {
        "archlab_experiment": experiment,
        "architecture": architecture,
        "dataset": dataset,
        "task": task,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "data_hash": dataset_hash(dataset),
        "dvc_stage": stage,
        **fingerprint(),
    }
    if params is not None:
        tags["params_hash"] = _short_hash({k: str(v) for k, v in params.items()})
    return tags


def training_tags(model, devices: int = 1) -> dict[str, str]:
    """How a model was trained (beside the fingerprint's `keras_backend`): precision policy,
    XLA, number of devices, loss scaling (mixed_float16's), and whether the run is
    deterministic (TF's op determinism on, without XLA)."""
    import keras

    import models
    from pipelines import runtime

    backend = keras.backend.backend()
    xla = getattr(model, "jit_compile", False) is True
    # XLA (JAX's always) promises no bit-identical reruns: an LSTM trained twice under JAX
    # with one seed on this CPU came out different
    deterministic = backend == "tensorflow" and runtime.deterministic() and not xla
    return {"precision": models.precision(model), "xla": "on" if xla else "off",
            "devices": str(devices), "deterministic": str(deterministic).lower(),
            "loss_scaling": "dynamic" if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) else "none"}


def log_dataset(dataset: str, splits: dict[str, int]) -> None:
    """The run's dataset as an MLflow dataset input (the UI's Dataset column): its prepared
    folder, a digest from its DVC hash, and each split's size as the input's tags."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():   # "can be interpreted in multiple ways": both are the local folder
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(paths.tfds_dir(dataset)))
    data = MetaDataset(source, name=dataset, digest=dataset_hash(dataset)[:8])
    tags = {f"{split}_examples": str(n) for split, n in splits.items()}
    for attempt in range(DATASET_LOG_ATTEMPTS):
        try:
            mlflow.log_input(data, context="training", tags=tags)
            return
        except mlflow.exceptions.MlflowException as error:
            # the store looks the dataset up, then inserts it: two machines logging the same
            # new dataset at once both insert, and one loses on the unique key. Its next try
            # finds the other's row and only links its run to it.
            if attempt + 1 == DATASET_LOG_ATTEMPTS or not _duplicate_key(error):
                raise
            time.sleep(0.2 * (attempt + 1))


def _duplicate_key(error: Exception) -> bool:
    """A store's unique-key violation: PostgreSQL's, MySQL's or SQLite's wording."""
    text = str(error)
    return any(words in text for words in ("duplicate key", "Duplicate entry", "UNIQUE constraint failed"))


def start(run_dir: Path, *, mlflow_experiment: str, run_name: str, tags: dict[str, str],
          system_metrics: bool = False):
    """Open this experiment's run: the one recorded in `run_dir/run.json` if it still
    exists in the store, else a new one. Returns the active-run context manager.
    `system_metrics`: MLflow samples CPU, memory (and GPU, with nvidia-ml-py) while it is open."""
    configure()
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", str(SYSTEM_METRICS_SECONDS))
    record = run_dir / RUN_FILE
    if record.exists():
        run_id = json.loads(record.read_text())["run_id"]
        try:
            mlflow.get_run(run_id)
            return mlflow.start_run(run_id=run_id, tags=tags, log_system_metrics=system_metrics)
        except mlflow.exceptions.MlflowException:
            log.warning("run %s is not in %s; starting a new run", run_id, tracking_uri())
    return mlflow.start_run(experiment_id=experiment_id(mlflow_experiment), run_name=run_name, tags=tags,
                            log_system_metrics=system_metrics)


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
            pip_requirements=[tensorflow_requirement(tf.__version__), f"keras=={keras.__version__}"])
    finally:
        mlflow.keras.save._save_example = original


def tensorflow_requirement(version: str) -> str:
    """The TensorFlow build installed here as a requirement: `tensorflow-cpu==v`, or
    `tensorflow[and-cuda]==v` where the CUDA wheels came with it (`make venv` on a GPU machine)."""
    from importlib import metadata

    providers = metadata.packages_distributions().get("tensorflow", [])
    if any(name.replace("_", "-").lower() == "tensorflow-cpu" for name in providers):
        return f"tensorflow-cpu=={version}"
    installed = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
    cuda = any(name.startswith("nvidia-cudnn") for name in installed)
    return f"tensorflow[and-cuda]=={version}" if cuda else f"tensorflow=={version}"


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


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.tracking links <base URL>`: a link to each experiment's runs table."""
    import argparse

    from pipelines import runtime

    parser = argparse.ArgumentParser(description="Links to the MLflow UI's runs table of each experiment.")
    parser.add_argument("command", choices=["links"])
    parser.add_argument("base", help="the UI's address, e.g. http://127.0.0.1:5000")
    args = parser.parse_args(argv)
    runtime.run_stage(lambda: print("\n".join(["the runs of each experiment:", *(f"  {line}" for line in
                                                                               ui_links(args.base))])))


if __name__ == "__main__":
    main()
