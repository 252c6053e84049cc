"""params.yaml validation: every bad case is one line naming the key, before any work."""

import shutil
import subprocess
import sys

import pytest
import yaml

from pipelines import config, paths, tracking
from tests.conftest import tiny_params


def test_the_default_params_are_valid():
    params = config.load()
    assert {"mlp", "cnn"} <= set(params.experiments)
    assert params.experiments["cnn"].dataset == "fashion_mnist"


def _with(path: str, value, params=None) -> dict:
    """tiny_params() with the dotted `path` set to `value` (or removed if value is DELETE)."""
    doc = params or tiny_params()
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


class _Delete:
    def __repr__(self) -> str:   # a stable test id (pytest-xdist workers must collect the same ids)
        return "<deleted>"


DELETE = _Delete()

BAD = [
    ("experiments.mlp.architecture", "transformer",
     r"experiments\.mlp\.architecture: unknown architecture 'transformer'; "
     r"known: autoencoder, bi_gru, bi_lstm, .*cnn, .*mlp"),
    ("experiments.mlp.dataset", "cifar",
     r"experiments\.mlp\.dataset: unknown dataset 'cifar'; "
     r"embedded: adding_problem/t<T>, addition, copy_task/t<T>, digits, fashion_mnist, fortunes"),
    ("datasets", ["digits", "imagenet"], r"datasets: unknown dataset 'imagenet'"),
    ("experiments.mlp.training.epochs", "ten",
     r"experiments\.mlp\.training\.epochs: Input should be a valid integer.*'ten'"),
    ("experiments.mlp.training.epochs", 0,
     r"experiments\.mlp\.training\.epochs: Input should be greater than or equal to 1 \(got 0\)"),
    ("experiments.mlp.training.learning_rate", -0.1,
     r"experiments\.mlp\.training\.learning_rate: Input should be greater than 0"),
    ("experiments.mlp.training.optimizer", "adagrad",
     r"experiments\.mlp\.training\.optimizer: Input should be 'adam', 'adamw', 'sgd' or 'rmsprop'"),
    ("experiments.mlp.training.validation_percent", 80,
     r"experiments\.mlp\.training\.validation_percent: Input should be less than or equal to 50"),
    ("experiments.mlp.training.batch_size", DELETE,
     r"experiments\.mlp\.training\.batch_size: Field required"),
    ("experiments.mlp.seed", DELETE, r"experiments\.mlp\.seed: Field required"),
    ("experiments.mlp.export", DELETE, r"experiments\.mlp\.export: Field required"),
    ("experiments.mlp.training.epoch", 3,
     r"`experiments\.mlp\.training\.epoch`: unknown key; did you mean `epochs`\?"),
    ("experiments.mlp.trainig", {"epochs": 1, "batch_size": 2, "learning_rate": 0.1},
     r"`experiments\.mlp\.trainig`: unknown key; did you mean `training`\?"),
    ("experiments.mlp.training.zzz", 3, r"`experiments\.mlp\.training\.zzz`: unknown key; known: batch_size, "),
    ("experiments.mlp.training.epochs", DELETE,
     r"experiments\.mlp\.training\.epochs: Field required \(mlp trains by gradient descent\)"),
    ("experiments.mlp.evaluation", {"beam_width": 2},
     r"`experiments\.mlp\.evaluation\.beam_width`: unknown key"),
    ("experiments.mlp.hyperparameters.dropout_rate", 1.5,
     r"experiments\.mlp\.hyperparameters\.dropout_rate: Input should be less than 1"),
    ("experiments.mlp.hyperparameters.hidden_unit", [3],
     r"`experiments\.mlp\.hyperparameters\.hidden_unit`: unknown key; did you mean `hidden_units`\?"),
    ("experiments.cnn.hyperparameters.filters", [],
     r"experiments\.cnn\.hyperparameters\.filters: List should have at least 1 item"),
    ("experiments.mlp.export.variants", ["int8"],
     r"experiments\.mlp\.export\.variants: must include 'float32'"),
    ("experiments.mlp.export.variants", ["float32", "int4"],
     r"experiments\.mlp\.export\.variants\.1: Input should be 'float32', 'dynamic_range', 'float16' or 'int8'"),
    ("datasets", ["fashion_mnist"],
     r"experiments\.\w+\.dataset: 'digits' is not in datasets \(fashion_mnist\)"),
    ("experiments", {}, r"experiments: Dictionary should have at least 1 item"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD])
def test_bad_params_name_the_key(path, value, message):
    with pytest.raises(config.ParamsError, match=message) as caught:
        config.validate(_with(path, value))
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("params.yaml: ")


def test_bad_experiment_name():
    doc = tiny_params()
    doc["experiments"]["My-MLP"] = doc["experiments"].pop("mlp")
    with pytest.raises(config.ParamsError, match=r"experiments\.My-MLP: experiment names are lower-case"):
        config.validate(doc)


def test_not_a_mapping_and_not_yaml(tmp_path):
    with pytest.raises(config.ParamsError, match="expected a mapping"):
        config.validate([1, 2])
    bad = tmp_path / "params.yaml"
    bad.write_text("experiments: [unclosed\n")
    with pytest.raises(config.ParamsError, match="params.yaml: not valid YAML"):
        config.load(bad)
    with pytest.raises(config.ParamsError, match="no such file"):
        config.load(tmp_path / "missing.yaml")


def test_flat_params_include_defaults():
    flat = tracking.flat_params(config.validate(tiny_params()).experiments["mlp"])
    assert flat["training.epochs"] == 4
    assert flat["hyperparameters.hidden_units"] == [32]
    assert flat["hyperparameters.activation"] == "relu"   # the architecture's default
    assert flat["export.float32_tolerance"] == 1e-4


def test_catalog_names_are_accepted():
    doc = tiny_params()
    doc["datasets"] = ["digits", "tfds/fashion_mnist"]
    doc["experiments"]["mlp"]["dataset"] = "tfds/fashion_mnist"
    assert config.validate(doc).experiments["mlp"].dataset == "tfds/fashion_mnist"


@pytest.mark.parametrize("stage", ["check", "prepare", "train", "evaluate", "export", "report"])
def test_stage_cli_rejects_bad_params_with_one_line_and_writes_nothing(tmp_path, stage):
    """Each stage entry point, run as DVC runs it, in a copy of the code with a bad params.yaml."""
    for folder in ("pipelines", "models", "edge"):
        shutil.copytree(paths.ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with("experiments.mlp.training.epochs", -3)))
    args = {"prepare": ["digits"], "report": []}.get(stage, ["mlp"])
    result = subprocess.run([sys.executable, "-m", f"pipelines.{stage}", *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: params.yaml: experiments.mlp.training.epochs: Input should be "
                      "greater than or equal to 1 (got -3)"]
    assert not (tmp_path / "outputs").exists()
    assert not (tmp_path / "mlflow").exists()


def test_unknown_experiment_on_the_command_line(tmp_path):
    for folder in ("pipelines", "models", "edge"):
        shutil.copytree(paths.ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    result = subprocess.run([sys.executable, "-m", "pipelines.train", "rnn"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "error: unknown experiment 'rnn'; params.yaml has cnn, mlp" in result.stderr
    assert not (tmp_path / "outputs").exists()
