"""The `params.yaml` schema (`datasets`, `experiments`, optional `study` and `anomaly`; see
the README), validated before any work, every error one line naming the key.

Two depths, so that a stage imports only its own architecture's code: `load` checks the
document's shape (keys, types, ranges, names) without importing any architecture family;
`experiment(params, name)`, `study(params)` and `anomaly(params)` check one section against
its architecture (hyperparameters, the training settings it takes, the task it does, the
task's evaluation settings); `validate` does both for everything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, field_validator, model_validator

import models
from models.registry import FAMILIES
from pipelines import datasets, paths, tasks
from pipelines.schema import ParamsError, Strict
from pipelines.schema import validate_as as _validate

NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
SWEEPS = ("study", "anomaly", "unfold")   # stages of their own: not experiment names
VARIANTS = ("float32", "dynamic_range", "float16", "int8")
PositiveFloat = Annotated[float, Field(gt=0)]


BACKENDS = ("tensorflow", "jax")   # PyTorch's is not installed or tested here
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# Measured (tests/pipelines/test_precision_devices.py): Keras 3.15's fit under
# MultiWorkerMirroredStrategy, two workers on loopback ports, fails (keras-team/keras#20585).
MULTI_WORKER_REFUSED = ("multi_worker is refused: Keras 3 cannot train under MultiWorkerMirroredStrategy "
                        "(keras-team/keras#20585); use mirrored (one machine, several devices)")


class Training(Strict):
    # What every architecture takes, fitted in closed form or by gradient descent:
    batch_size: int = Field(ge=1)
    validation_percent: int = Field(default=10, ge=1, le=50)
    max_train_examples: int | None = Field(default=None, ge=1)
    # Gradient descent only (an architecture fitted in closed form refuses them):
    epochs: int | None = Field(default=None, ge=1)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float | None = Field(default=None, gt=0, le=10)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    early_stopping_patience: int = Field(default=5, ge=0)
    clipnorm: PositiveFloat | None = None
    clipvalue: PositiveFloat | None = None
    shuffle_buffer: int = Field(default=10_000, ge=1)
    # Updates per epoch, the training split repeating as needed (default: one pass over it);
    # epochs x steps_per_epoch is then the number of updates, whatever the dataset size.
    steps_per_epoch: int | None = Field(default=None, ge=1)
    # Train steps per call into TensorFlow: more saves per-step overhead on small models.
    steps_per_execution: int = Field(default=1, ge=1)
    # The Keras backend the train stage runs (evaluate and export always run TensorFlow's,
    # reading the portable `.keras` file), and the layers' compute precision: the mixed
    # policies compute in 16 bits and keep the variables and the output layers in float32;
    # mixed_float16 also scales the loss.
    backend: Literal[BACKENDS] = "tensorflow"
    precision: Literal[PRECISIONS] = "float32"
    # XLA: None is the backend's default, off under TensorFlow (whose deterministic ops XLA
    # does not keep: true turns op determinism off and the run is tagged `deterministic:
    # false`), on under JAX (which always compiles with XLA).
    jit_compile: bool | None = None
    # none; mirrored: MirroredStrategy over the local GPUs (at most `devices` of them), or over
    # `devices` logical CPU devices on a machine without one; multi_worker is refused
    # (MULTI_WORKER_REFUSED).
    distribution: Literal["none", "mirrored", "multi_worker"] = "none"
    devices: int | None = Field(default=None, ge=1, le=64)

    @field_validator("distribution")
    @classmethod
    def _no_multi_worker(cls, v: str) -> str:
        if v == "multi_worker":
            raise ValueError(MULTI_WORKER_REFUSED)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Training:
        if self.devices is not None and self.distribution != "mirrored":
            raise ValueError("devices: only with distribution: mirrored")
        if self.backend != "tensorflow" and self.distribution != "none":
            raise ValueError(f"distribution: {self.distribution} is tf.distribute's, so it needs backend: tensorflow")
        if self.backend == "tensorflow" and self.jit_compile and self.distribution != "none":
            raise ValueError("jit_compile: XLA with a tf.distribute strategy is not supported here; "
                             "use distribution: none")
        return self


FITTING = ("batch_size", "validation_percent", "max_train_examples", "backend", "precision")
GRADIENT_REQUIRED = ("epochs", "learning_rate")


class Export(Strict):
    variants: list[Literal[VARIANTS]] = Field(default=list(VARIANTS), min_length=1)
    float32_tolerance: float = Field(default=1e-4, gt=0)
    representative_examples: int = Field(default=200, ge=1)
    parity_examples: int | None = Field(default=None, ge=1)
    latency_runs: int = Field(default=200, ge=1)

    @field_validator("variants")
    @classmethod
    def _float32_first(cls, v: list[str]) -> list[str]:
        if "float32" not in v:
            raise ValueError("must include 'float32' (the parity reference)")
        return v


def _known_architecture(v: str) -> str:
    if v not in FAMILIES:
        raise ValueError(f"unknown architecture {v!r}; known: {', '.join(models.names())}")
    return v


class Experiment(Strict):
    architecture: str
    dataset: str
    seed: int = Field(ge=0)
    hyperparameters: dict = {}  # the architecture's schema; {}: its defaults
    training: Training
    evaluation: dict = {}       # the task's evaluation schema; {}: its defaults
    export: Export              # may be {}: the defaults above

    _architecture = field_validator("architecture")(_known_architecture)


class Study(Strict):
    """The long-term dependency study (`pipelines/study.py`): each cell on the adding
    problem at each length T, once per clipping setting, the same number of updates each
    (training.epochs x training.steps_per_epoch)."""

    cells: list[str] = Field(min_length=1)                        # registered architectures
    lengths: list[Annotated[int, Field(ge=2)]] = Field(min_length=1)
    clipnorm: list[PositiveFloat | None] = Field(min_length=1)  # null: no clipping
    seed: int = Field(ge=0)
    hyperparameters: dict = {}                                    # for every cell
    training: Training
    workers: int = Field(default=2, ge=1)   # runs side by side, one process and thread each

    @field_validator("cells")
    @classmethod
    def _known_cells(cls, v: list[str]) -> list[str]:
        for name in v:
            _known_architecture(name)
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
    hyperparameters: dict = {}
    training: Training
    threshold_percentile: float = Field(default=95.0, gt=0, lt=100)

    _architecture = field_validator("architecture")(_known_architecture)

    @field_validator("classes")
    @classmethod
    def _once_each(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"each class once (got {v})")
        return v

    def experiment(self) -> Experiment:
        return Experiment(architecture=self.architecture, dataset=self.dataset, seed=self.seed,
                          hyperparameters=self.hyperparameters, training=self.training,
                          export={"variants": ["float32"]})   # never exported


class Unfold(Strict):
    """Unfolded computational graphs (`pipelines/unfold.py`) of two trained experiments: a
    recurrent one rolled and unrolled over `steps`, a tree one over one test tree of depth
    `tree_depth` and at most `tree_nodes` nodes."""

    recurrent: str
    tree: str
    steps: int = Field(default=4, ge=1, le=32)
    tree_depth: int = Field(default=2, ge=1)
    tree_nodes: int = Field(default=10, ge=2, le=64)


# --- the user's datasets (pipelines/datasets/user.py) -----------------------------------------

TestPercent = Annotated[int, Field(ge=1, le=50)]
Side = Annotated[int, Field(ge=4, le=4096)]


class UserImages(Strict):
    """A folder of images: one sub-folder per class, or train/ and test/ folders of them."""

    kind: Literal["images"]
    path: str = Field(min_length=1)                 # relative to the repository, or absolute
    image_size: tuple[Side, Side] | None = None     # [height, width]: resize every image to it
    channels: Literal[1, 3] = 3                     # 1 grey, 3 RGB
    test_percent: TestPercent = 20                  # per class, without train/ and test/ folders
    seed: int = Field(default=0, ge=0)              # of that split


class UserSeries(Strict):
    """A CSV time series: the column to forecast, and input columns beside it."""

    kind: Literal["csv"]
    path: str = Field(min_length=1)
    column: str = Field(min_length=1)
    inputs: list[str] = []
    window: int = Field(default=32, ge=2, le=4096)
    test_percent: TestPercent = 20                  # the last rows

    @model_validator(mode="after")
    def _distinct(self) -> UserSeries:
        if len({self.column, *self.inputs}) != 1 + len(self.inputs):
            raise ValueError(f"inputs: each column once, and not the forecast column {self.column!r}")
        return self


class UserText(Strict):
    """A text file, or a folder of .txt files: character language modelling."""

    kind: Literal["text"]
    path: str = Field(min_length=1)
    window: int = Field(default=100, ge=2, le=4096)
    test_percent: TestPercent = 10                  # the last characters


USER_KINDS: dict[str, type[Strict]] = {"images": UserImages, "csv": UserSeries, "text": UserText}


class Params(Strict):
    datasets: list[str] = Field(min_length=1)
    user_datasets: dict[str, dict] = {}   # name -> one of USER_KINDS, by its `kind`
    experiments: dict[str, Experiment] = Field(min_length=1)
    study: Study | None = None
    anomaly: Anomaly | None = None
    unfold: Unfold | None = None


# --- the document, then each section against its architecture ----------------------------

def validate(raw: object, source: str = "params.yaml", *, deep: bool = True) -> Params:
    """Validate a parsed params document (with `deep`, every section against its
    architecture too); raise ParamsError with a one-line message."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    params = _validate(Params, raw, source)
    datasets.use_user_datasets({name: user_dataset(name, entry, source).model_dump()
                                for name, entry in params.user_datasets.items()})
    for where, name in [*(("datasets", n) for n in params.datasets),
                        *((f"experiments.{e}.dataset", exp.dataset) for e, exp in params.experiments.items())]:
        try:
            datasets.check_name(name)
        except ValueError as e:
            raise ParamsError(f"{source}: {where}: {e}") from None
    for name, exp in params.experiments.items():
        where = f"experiments.{name}"
        if not re.match(NAME_PATTERN, name) or name in SWEEPS:
            raise ParamsError(f"{source}: {where}: experiment names are lower-case letters, digits and "
                              f"underscores, and not {' or '.join(SWEEPS)} (the sweeps' own lanes)")
        if exp.dataset not in params.datasets:
            raise ParamsError(f"{source}: {where}.dataset: {exp.dataset!r} is not in datasets "
                              f"({', '.join(params.datasets)}), so it is never prepared")
    if params.anomaly is not None and params.anomaly.dataset not in params.datasets:
        raise ParamsError(f"{source}: anomaly.dataset: {params.anomaly.dataset!r} is not in datasets "
                          f"({', '.join(params.datasets)}), so it is never prepared")
    if deep:
        for name in params.experiments:
            experiment(params, name, source)
        study(params, source)
        anomaly(params, source)
        unfold(params, source)
    return params


def user_dataset(name: str, entry: object, source: str = "params.yaml") -> Strict:
    """One entry of `user_datasets`, checked against its kind's schema."""
    where = f"user_datasets.{name}"
    if not re.match(NAME_PATTERN, name) or name in datasets.EMBEDDED:
        raise ParamsError(f"{source}: {where}: a user dataset's name is lower-case letters, digits and "
                          "underscores, and not an embedded dataset's")
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind not in USER_KINDS:
        raise ParamsError(f"{source}: {where}.kind: expected one of {', '.join(USER_KINDS)} (got {kind!r})")
    return _validate(USER_KINDS[kind], entry, source, where)


def check_experiment(exp: Experiment, where: str, source: str = "params.yaml") -> None:
    """One experiment against its architecture: hyperparameters, the training settings the
    architecture takes, the task it does on the dataset, the task's evaluation settings."""
    arch = models.get(exp.architecture)
    hyperparameters = _validate(arch.hyperparameters, exp.hyperparameters, source, f"{where}.hyperparameters")
    _check_training(arch, hyperparameters, exp.training, f"{where}.training", source)
    native = datasets.static_task(exp.dataset)   # a catalog dataset's task: once it is prepared
    task = task_for(exp.architecture, native)
    if task is None:
        return
    if task not in arch.tasks:
        serves = ", ".join((native, *datasets.ALSO.get(native, ())))
        raise ParamsError(f"{source}: {where}.architecture: {exp.architecture!r} does not do {task} (dataset "
                          f"{exp.dataset!r} serves {serves}); it does {', '.join(arch.tasks)}")
    if task not in arch.tasks_with(hyperparameters):
        raise ParamsError(f"{source}: {where}.hyperparameters: with these {exp.architecture!r} does "
                          f"{', '.join(arch.tasks_with(hyperparameters))}, not {task} (dataset {exp.dataset!r})")
    evaluation(exp, task, where, source)
    serving = tasks.get(task, exp.architecture)
    if serving.input_dtype == "int32" and getattr(hyperparameters, "vocabulary", 0) is None:
        raise ParamsError(f"{source}: {where}.hyperparameters.vocabulary: {exp.architecture!r} reads token ids "
                          f"on {exp.dataset!r}: set the number of token ids")
    no_int8 = serving.no_int8
    if no_int8 and "int8" in exp.export.variants:
        raise ParamsError(f"{source}: {where}.export.variants: {exp.architecture!r} exports {no_int8}; "
                          "list float32, dynamic_range, float16")


def _check_training(arch, hyperparameters, training: Training, where: str, source: str) -> None:
    if arch.trains_by_gradient(hyperparameters):
        for key in GRADIENT_REQUIRED:
            if getattr(training, key) is None:
                raise ParamsError(f"{source}: {where}.{key}: Field required ({arch.name} trains by gradient descent)")
        return
    for key in sorted(training.model_fields_set - set(FITTING)):
        raise ParamsError(f"{source}: {where}.{key}: {arch.name} is fitted in closed form with these "
                          f"hyperparameters (no gradient descent), so it takes only {', '.join(FITTING)}")


def _one_process(training: Training, where: str, source: str) -> None:
    """The sweeps train many models in one TensorFlow process: its backend, one device."""
    if training.backend != "tensorflow" or training.distribution != "none":
        raise ParamsError(f"{source}: {where}: the sweep trains every run in one process, under backend: "
                          "tensorflow and distribution: none")


def experiment(params: Params, name: str, source: str = "params.yaml") -> Experiment:
    """The experiment `name`, checked against its architecture."""
    try:
        exp = params.experiments[name]
    except KeyError:
        raise ParamsError(f"unknown experiment {name!r}; params.yaml has "
                          f"{', '.join(sorted(params.experiments))}") from None
    check_experiment(exp, f"experiments.{name}", source)
    return exp


def study(params: Params, source: str = "params.yaml") -> Study | None:
    """The study, each cell checked: it does the adding problem, takes the hyperparameters."""
    settings = params.study
    for cell in settings.cells if settings else ():
        arch = models.get(cell)
        if "sequence_regression" not in arch.tasks:
            raise ParamsError(f"{source}: study.cells: {cell!r} does not do sequence_regression (the adding problem)")
        hyperparameters = _validate(arch.hyperparameters, settings.hyperparameters, source, "study.hyperparameters")
        _check_training(arch, hyperparameters, settings.training, "study.training", source)
        _one_process(settings.training, "study.training", source)
    return settings


def anomaly(params: Params, source: str = "params.yaml") -> Anomaly | None:
    """The anomaly sweep, checked: an autoencoder, on an image dataset."""
    settings = params.anomaly
    if settings is None:
        return None
    if "reconstruction" not in models.get(settings.architecture).tasks:
        raise ParamsError(f"{source}: anomaly.architecture: {settings.architecture!r} does not do "
                          "reconstruction: one-class detection needs an autoencoder")
    native = datasets.static_task(settings.dataset)
    if native is not None and "reconstruction" not in datasets.ALSO.get(native, ()):
        raise ParamsError(f"{source}: anomaly.dataset: {settings.dataset!r} is not an image dataset")
    check_experiment(settings.experiment(), "anomaly", source)
    _one_process(settings.training, "anomaly.training", source)
    return settings


def unfold(params: Params, source: str = "params.yaml") -> Unfold | None:
    """The unfolding, checked: a recurrent experiment (an architecture with `unroll`) and a
    tree one (an architecture that reads trees)."""
    settings = params.unfold
    if settings is None:
        return None
    for key, wanted in (("recurrent", "a recurrent architecture (one with `unroll`)"),
                        ("tree", "an architecture that reads trees")):
        name = getattr(settings, key)
        if name not in params.experiments:
            raise ParamsError(f"{source}: unfold.{key}: {name!r} is not an experiment "
                              f"({', '.join(params.experiments)})")
        arch = models.get(params.experiments[name].architecture)
        fits = arch.trees if key == "tree" else "unroll" in arch.hyperparameters.model_fields and not arch.trees
        if not fits:
            raise ParamsError(f"{source}: unfold.{key}: {name!r} is {arch.name}, not {wanted}")
    return settings


def load(path: Path = paths.PARAMS, *, deep: bool = False) -> Params:
    """Read `params.yaml` and check its shape (with `deep`, every section too)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{Path(path).name}: not valid YAML{line}: "
                          f"{getattr(e, 'problem', None) or str(e).splitlines()[0]}") from None
    return validate(raw, Path(path).name, deep=deep)


# --- what the stages read ---------------------------------------------------------------

def hyperparameters(exp: Experiment) -> models.registry.Hyperparameters:
    """The experiment's hyperparameters, with the architecture's defaults filled in."""
    return models.get(exp.architecture).hyperparameters.model_validate(exp.hyperparameters)


def evaluation(exp: Experiment, task: str, where: str = "evaluation", source: str = "params.yaml"):
    """The experiment's evaluation settings, with the task's defaults filled in."""
    return _validate(tasks.get(task).Evaluation, exp.evaluation, source, f"{where}.evaluation")


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
