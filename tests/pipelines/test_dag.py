"""dvc.yaml from params.yaml and the code's imports (pipelines/dag.py): current, and each
stage's dependencies its own; test_e2e.py runs every stage kind and checks its imports."""

from __future__ import annotations

from pipelines import config, dag, imports, paths
from tests.conftest import TINY_STUDY, tiny_params


def test_the_committed_dvc_yaml_is_what_params_and_code_give():
    assert (paths.ROOT / "dvc.yaml").read_text() == dag.render(config.load(deep=True))


def test_closure_follows_module_level_imports_not_imports_inside_functions():
    assert imports.closure(["models.mlp"]) == {"models", "models.registry", "models.mlp"}
    train = imports.closure(["pipelines.train"])
    # a task names its exporter inside a method, and the registry imports families by name
    assert "pipelines.exporters.single" not in train and "models.esn" not in train
    assert {"pipelines.training", "pipelines.config", "pipelines.tasks.base"} <= train


def _params(**extra) -> config.Params:
    lm = {"architecture": "rnn_lm", "dataset": "fortunes", "seed": 1, "hyperparameters": {"units": 4},
          "evaluation": {"temperatures": [1.0]},
          "training": {"epochs": 1, "batch_size": 4, "learning_rate": 0.01}, "export": {"variants": ["float32"]}}
    esn = {"architecture": "esn", "dataset": "mackey_glass", "seed": 1, "training": {"batch_size": 8},
           "export": {"variants": ["float32"]}}
    return config.validate({**tiny_params(("fortunes", "mackey_glass"), lm=lm, mg_esn=esn), **extra})


def test_each_stage_depends_on_its_own_family_task_and_data():
    stages = dag.resolved(_params(study=TINY_STUDY))
    train = stages["train@cnn"]
    assert {"models/cnn.py", "pipelines/tasks/image_classification.py", "pipelines/datasets/builders.py",
            "outputs/tfds/digits", "outputs/checks/cnn.ok"} <= set(train["deps"])
    for other in ("models/mlp.py", "models/esn.py", "pipelines/tasks/forecasting.py", "pipelines/datasets/text.py",
                  "pipelines/exporters/single.py", "outputs/tfds/mackey_glass"):
        assert other not in train["deps"], other
    assert "pipelines/exporters/steps.py" in stages["export@lm"]["deps"]
    assert {"pipelines/exporters/stream.py", "pipelines/exporters/window.py",
            "models/streaming.py"} <= set(stages["export@mg_esn"]["deps"])
    assert "pipelines/exporters/single.py" not in stages["export@mg_esn"]["deps"]
    assert "pipelines/exporters/stream.py" not in stages["export@lm"]["deps"]
    assert {"models/esn.py", "pipelines/tasks/forecasting.py"} <= set(stages["evaluate@mg_esn"]["deps"])
    # datasets: raw data for those read from data/, none for generated ones
    assert "data/digits" in stages["prepare@digits"]["deps"]
    assert "generate@mackey_glass" in stages and not any(d.startswith("data") for d in
                                                        stages["generate@mackey_glass"]["deps"])
    assert "models/recurrent.py" in stages["study"]["deps"] and "models/cnn.py" not in stages["study"]["deps"]


def test_evaluation_settings_feed_evaluate_alone_and_every_lane_starts_with_its_check():
    stages = dag.resolved(_params())
    assert "experiments.lm.evaluation" in stages["evaluate@lm"]["params"]
    assert not any("evaluation" in p for p in stages["train@lm"]["params"] + stages["export@lm"]["params"])
    assert stages["check@lm"]["params"] == ["experiments.lm"]
    # DVC needs every params key it tracks to be in params.yaml: a block left out (its
    # defaults apply) is stood in for by the seed
    assert "experiments.mg_esn.hyperparameters" not in stages["train@mg_esn"]["params"]
    assert stages["evaluate@mg_esn"]["params"].count("experiments.mg_esn.seed") == 2
    for kind in ("train", "evaluate", "export"):
        assert stages[f"{kind}@lm"]["deps"][0] == "outputs/checks/lm.ok"
    # the stamp survives a failed check (persist) and never reaches the cache
    assert stages["check@lm"]["outs"] == [{"outputs/checks/lm.ok": {"cache": False, "persist": True}}]
