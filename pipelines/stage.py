"""What every per-experiment stage (train, evaluate, export) starts with.

    context = stage.open_experiment("cnn", params)   # checked, seeded, dataset loaded
    with stage.mlflow_run(context, "evaluate"): ...  # the experiment's MLflow run
    stage.cli(evaluate, "Evaluate one experiment")   # `python -m pipelines.evaluate cnn`
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from pipelines import config, datasets, paths, runtime, tasks, tracking


@dataclass
class Context:
    name: str
    experiment: config.Experiment
    splits: datasets.Splits
    task: tasks.Task
    root: Path                            # <root>/train, <root>/eval, <root>/export
    mlflow_experiment: str | None = None  # default: <task>/<dataset>

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def evaluation(self):
        """The experiment's evaluation settings for its task."""
        return config.evaluation(self.experiment, self.task.name, f"experiments.{self.name}")


def open_experiment(name: str, params: config.Params) -> Context:
    """Check the experiment of params.yaml, seed everything, load its dataset and task."""
    return context(name, config.experiment(params, name), paths.EXPERIMENTS / name)


def context(name: str, exp: config.Experiment, root: Path, *, data_dir: Path | None = None,
            mlflow_experiment: str | None = None) -> Context:
    """Seed everything and load the dataset and task of any experiment (also the sweeps')."""
    training = exp.training
    runtime.setup(exp.seed, deterministic=not (training.backend == "tensorflow" and training.jit_compile),
                  cpu_devices=training.devices if training.distribution == "mirrored" else None)
    splits = datasets.load(exp.dataset, exp.training.validation_percent, data_dir)
    return Context(name, exp, splits, tasks.get(config.task_for(exp.architecture, splits.task), exp.architecture), root,
                   mlflow_experiment)


def trained_model(name: str, *, float32: bool = False) -> keras.Model:
    """The experiment's trained model; with `float32`, computing in float32 whatever
    precision it was trained in (what TFLite converts: it has no bfloat16 kernels)."""
    path = paths.train_dir(name) / "model.keras"
    if not path.exists():
        raise FileNotFoundError(f"no trained model at {path}; run `dvc repro train@{name}`")
    model = keras.models.load_model(path)
    return in_float32(model) if float32 else model


def in_float32(model: keras.Model) -> keras.Model:
    """`model` with every layer's dtype policy float32 and the same weights (the variables
    of a mixed-precision model are float32 already); `model` itself if it is float32."""
    config = keras.saving.serialize_keras_object(model)
    policies = []

    def float32_policies(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and node["config"]["name"] != "float32":
                policies.append(node["config"]["name"])
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {k: float32_policies(v) for k, v in node.items()}
        if isinstance(node, list):
            return [float32_policies(v) for v in node]
        return node

    config = float32_policies(config)
    if not policies:
        return model
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def mlflow_run(context: Context, stage: str, run_dir=None):
    """The experiment's MLflow run: train opens it in `run_dir` (its staging folder), the
    later stages find it through `train/run.json`. Tagged with the machine's fingerprint,
    what the run is of (commit, data and params hashes) and the task's headline metric;
    the train stage also samples system metrics."""
    exp, task = context.experiment, context.task
    tags = tracking.run_tags(context.name, exp.architecture, exp.dataset, task.name, f"{stage}@{context.name}",
                             params=tracking.flat_params(exp))
    tags.update(headline_metric=f"test_{task.headline}", higher_is_better=str(task.higher_is_better).lower())
    experiment = context.mlflow_experiment or tracking.experiment_name(task.name, exp.dataset)
    if stage == "train":
        tracking.set_runs_view(tracking.experiment_id(experiment), tags["headline_metric"], task.higher_is_better)
    return tracking.start(run_dir or context.train_dir, run_name=context.name, tags=tags,
                          mlflow_experiment=experiment, system_metrics=stage == "train")


def cli(run: Callable[[str, config.Params], object], description: str,
        backend: Callable[[config.Experiment], str] = lambda exp: "tensorflow") -> None:
    """`python -m pipelines.<stage> <experiment>`: run with params.yaml under the Keras
    backend `backend` names for the experiment (restarting under it if another is loaded),
    errors as one line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("experiment", help="a key under `experiments` in params.yaml")
    args = parser.parse_args()

    def main() -> None:
        params = config.load()
        runtime.ensure_backend(backend(config.experiment(params, args.experiment)))
        run(args.experiment, params)

    runtime.run_stage(main)
