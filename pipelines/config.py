"""The `params.yaml` schema, validated before any work.

    datasets: [fashion_mnist]          # prepared by the `prepare` stage
    experiments:
      <name>:                           # a DVC foreach key and an MLflow run name
        architecture: cnn               # a name in the models registry
        dataset: fashion_mnist          # embedded name or tfds/<catalog name>
        seed: 42
        hyperparameters: {...}          # the architecture's own schema (models/<family>.py)
        training: {...}                 # `Training` below
        export: {...}                   # `Export` below
    study: {...}                        # optional: `Study` below (the adding-problem sweep)

Any error (unknown name, wrong type, out-of-range value, missing or unknown key) is
reported as one line naming the key and what is allowed, before anything is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import models
from pipelines import datasets, paths

NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
VARIANTS = ("float32", "dynamic_range", "float16", "int8")
PositiveFloat = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Training(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(gt=0, le=10)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    validation_percent: int = Field(default=10, ge=1, le=50)
    early_stopping_patience: int = Field(default=5, ge=0)
    clipnorm: Optional[PositiveFloat] = None
    clipvalue: Optional[PositiveFloat] = None
    shuffle_buffer: int = Field(default=10_000, ge=1)
    max_train_examples: Optional[int] = Field(default=None, ge=1)
    # Updates per epoch, the training split repeating as needed (default: one pass over it);
    # epochs x steps_per_epoch is then the number of updates, whatever the dataset size.
    steps_per_epoch: Optional[int] = Field(default=None, ge=1)
    # Train steps per call into TensorFlow: more saves per-step overhead on small models.
    steps_per_execution: int = Field(default=1, ge=1)


class Export(Strict):
    variants: list[Literal[VARIANTS]] = Field(default=list(VARIANTS), min_length=1)
    float32_tolerance: float = Field(default=1e-4, gt=0)
    representative_examples: int = Field(default=200, ge=1)
    parity_examples: Optional[int] = Field(default=None, ge=1)
    latency_runs: int = Field(default=200, ge=1)

    @field_validator("variants")
    @classmethod
    def _float32_first(cls, v: list[str]) -> list[str]:
        if "float32" not in v:
            raise ValueError("must include 'float32' (the parity reference)")
        return v


class Experiment(Strict):
    architecture: str
    dataset: str
    seed: int = Field(ge=0)
    hyperparameters: dict      # may be {}: the architecture's defaults
    training: Training
    export: Export             # may be {}: the defaults below

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, v: str) -> str:
        models.get(v)
        return v

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        datasets.check_name(v)
        return v


class Study(Strict):
    """The long-term dependency study (`pipelines/study.py`): each cell on the adding
    problem at each length T, once per clipping setting, the same number of updates each
    (training.epochs x training.steps_per_epoch)."""

    cells: list[str] = Field(min_length=1)                        # registered architectures
    lengths: list[Annotated[int, Field(ge=2)]] = Field(min_length=1)
    clipnorm: list[Optional[PositiveFloat]] = Field(min_length=1)  # null: no clipping
    seed: int = Field(ge=0)
    hyperparameters: dict                                         # for every cell
    training: Training
    workers: int = Field(default=2, ge=1)   # runs side by side, one process and thread each

    @field_validator("cells")
    @classmethod
    def _known_cells(cls, v: list[str]) -> list[str]:
        for name in v:
            arch = models.get(name)
            if "sequence_regression" not in arch.tasks:
                raise ValueError(f"{name!r} does not do sequence_regression (the adding problem)")
        return v

    @field_validator("training")
    @classmethod
    def _same_updates(cls, v: Training) -> Training:
        if v.steps_per_epoch is None:
            raise ValueError("set steps_per_epoch: every run makes epochs x steps_per_epoch updates")
        if v.early_stopping_patience:
            raise ValueError("early_stopping_patience must be 0: every run makes the same updates")
        if v.clipnorm is not None or v.clipvalue is not None:
            raise ValueError("leave clipnorm/clipvalue unset: the study's clipnorm list sets them")
        return v


class Anomaly(Strict):
    """One-class anomaly detection (`pipelines/anomaly.py`): an autoencoder trained on each
    class of `classes` alone, every test image scored by its reconstruction error."""

    architecture: str                                   # an autoencoder (task reconstruction)
    dataset: str                                        # an image dataset
    classes: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)   # the normal class of each run
    seed: int = Field(ge=0)
    hyperparameters: dict
    training: Training
    threshold_percentile: float = Field(default=95.0, gt=0, lt=100)

    @field_validator("classes")
    @classmethod
    def _once_each(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"each class once (got {v})")
        return v

    @field_validator("architecture")
    @classmethod
    def _an_autoencoder(cls, v: str) -> str:
        if "reconstruction" not in models.get(v).tasks:
            raise ValueError(f"{v!r} does not do reconstruction: one-class detection needs an autoencoder")
        return v

    def experiment(self) -> Experiment:
        return Experiment(architecture=self.architecture, dataset=self.dataset,
                          seed=self.seed, hyperparameters=self.hyperparameters, training=self.training, export={})


class Params(Strict):
    datasets: list[str] = Field(min_length=1)
    experiments: dict[str, Experiment] = Field(min_length=1)
    study: Optional[Study] = None
    anomaly: Optional[Anomaly] = None

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, v: list[str]) -> list[str]:
        for name in v:
            datasets.check_name(name)
        return v


class ParamsError(ValueError):
    """params.yaml is invalid; the message is one line naming the key."""


def _one_line(error: ValidationError, prefix: str = "") -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {first['input']!r})" if first["type"] not in ("missing",) and \
        not isinstance(first["input"], dict) else ""
    return f"{where}: {message}{got}"


def validate(raw: object, source: str = "params.yaml") -> Params:
    """Validate a parsed params document; raise ParamsError with a one-line message."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        raise ParamsError(f"{source}: {_one_line(e)}") from None
    for name, exp in params.experiments.items():
        where = f"experiments.{name}"
        if not re.match(NAME_PATTERN, name):
            raise ParamsError(f"{source}: {where}: experiment names are lower-case letters, "
                              "digits and underscores")
        arch = models.get(exp.architecture)
        try:
            arch.hyperparameters.model_validate(exp.hyperparameters)
        except ValidationError as e:
            raise ParamsError(f"{source}: {_one_line(e, where + '.hyperparameters')}") from None
        # a catalog dataset's task is known once it is prepared: the stage checks it then
        native = datasets.static_task(exp.dataset)
        task = task_for(exp.architecture, native)
        if task is not None and task not in arch.tasks:
            serves = ", ".join((native, *datasets.ALSO.get(native, ())))
            raise ParamsError(f"{source}: {where}.architecture: {exp.architecture!r} does not do "
                              f"{task} (dataset {exp.dataset!r} serves {serves}); it does {', '.join(arch.tasks)}")
        if (arch.steps is not None or task == "reconstruction") and "int8" in exp.export.variants:
            kind = "step models" if arch.steps is not None else "an encoder and a decoder"
            raise ParamsError(f"{source}: {where}.export.variants: {exp.architecture!r} exports {kind}, "
                              "which have no int8 variant; list float32, dynamic_range, float16")
        if exp.dataset not in params.datasets:
            raise ParamsError(f"{source}: {where}.dataset: {exp.dataset!r} is not in datasets "
                              f"({', '.join(params.datasets)}), so it is never prepared")
    if params.anomaly is not None:
        native = datasets.static_task(params.anomaly.dataset)
        if native is not None and "reconstruction" not in datasets.ALSO.get(native, ()):
            raise ParamsError(f"{source}: anomaly.dataset: {params.anomaly.dataset!r} is not an image dataset")
        if params.anomaly.dataset not in params.datasets:
            raise ParamsError(f"{source}: anomaly.dataset: {params.anomaly.dataset!r} is not in datasets "
                              f"({', '.join(params.datasets)}), so it is never prepared")
        try:
            models.get(params.anomaly.architecture).hyperparameters.model_validate(params.anomaly.hyperparameters)
        except ValidationError as e:
            raise ParamsError(f"{source}: {_one_line(e, 'anomaly.hyperparameters')}") from None
    if params.study is not None:
        for cell in params.study.cells:
            try:
                models.get(cell).hyperparameters.model_validate(params.study.hyperparameters)
            except ValidationError as e:
                raise ParamsError(f"{source}: {_one_line(e, 'study.hyperparameters')}") from None
    return params


def load(path: Path = paths.PARAMS) -> Params:
    """Read and validate `params.yaml`."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{Path(path).name}: not valid YAML: {str(e).splitlines()[0]}") from None
    return validate(raw, Path(path).name)


def hyperparameters(exp: Experiment) -> models.registry.Hyperparameters:
    """The experiment's hyperparameters, with the architecture's defaults filled in."""
    return models.get(exp.architecture).hyperparameters.model_validate(exp.hyperparameters)


def flat(exp: Experiment) -> dict[str, object]:
    """Every setting of an experiment as dotted keys (for MLflow params), defaults included."""
    doc = exp.model_dump()
    doc["hyperparameters"] = hyperparameters(exp).model_dump()
    out: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value

    walk("", doc)
    return out


def experiment(params: Params, name: str) -> Experiment:
    try:
        return params.experiments[name]
    except KeyError:
        raise ParamsError(f"unknown experiment {name!r}; params.yaml has "
                          f"{', '.join(sorted(params.experiments))}") from None


def task_for(architecture: str, native: str | None) -> str | None:
    """The dataset's own task, or for an architecture that does not do it, the first other
    task the dataset serves that the architecture does (an autoencoder on an image dataset:
    reconstruction). None while a catalog dataset's task is unknown."""
    if native is None:
        return None
    does = models.get(architecture).tasks
    return native if native in does else next((t for t in datasets.ALSO.get(native, ()) if t in does), native)


def task_name(exp: Experiment) -> str:
    """The experiment's task, from its dataset and architecture."""
    return task_for(exp.architecture, datasets.task(exp.dataset))
