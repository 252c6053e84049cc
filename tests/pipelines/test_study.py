"""The long-term dependency study: its params, its runs, its outputs and MLflow records."""

from __future__ import annotations

import copy
import json

import keras
import mlflow
import pandas as pd
import pytest

from pipelines import config, paths, study
from tests.conftest import TINY_STUDY, tiny_params


def _params(**changes) -> config.Params:
    raw = tiny_params()
    raw["study"] = copy.deepcopy(TINY_STUDY)
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            raw["study"][section][field] = value
        else:
            raw["study"][section] = value
    return config.validate(raw)


def test_every_cell_length_and_clipping_is_a_run_with_the_same_updates(workspace):
    params = _params()
    study.prepare_data(params)
    results = study.run_study(params)
    assert list(results["run"]) == ["gru_t4_noclip", "gru_t4_clip1", "gru_t6_noclip", "gru_t6_clip1"]
    assert set(results["updates"]) == {3}
    for run in results["run"]:   # what the optimizer really did: 1 epoch x 3 steps, whatever the data size
        model = keras.models.load_model(paths.STUDY / "runs" / run / "train" / "model.keras")
        assert int(model.optimizer.iterations) == 3
    assert results["test_mse"].notna().all() and (results["baseline_mse"] > 0).all()
    saved = pd.read_csv(paths.STUDY / "results.csv")
    pd.testing.assert_frame_equal(saved, results, check_dtype=False)
    metrics = json.loads((paths.STUDY / "metrics.json").read_text())
    assert metrics["gru_t6_clip1"]["test_mse"] == pytest.approx(results["test_mse"].iloc[3])
    for run in results["run"]:   # every run went through the generic train and evaluate stages
        history = pd.read_csv(paths.STUDY / "runs" / run / "train" / "history.csv")
        assert len(history) == 1
        assert (paths.STUDY / "runs" / run / "eval" / "metrics.json").exists()
    table = (paths.STUDY / "study.md").read_text()
    assert "| T = 4" in table and "| T = 6" in table and "clipnorm 1" in table and "none" in table
    assert (paths.STUDY / study.FIGURE).stat().st_size > 1000

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study.MLFLOW_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(results["run"])
    clipped = {r.info.run_name: r.data.params.get("training.clipnorm") for r in runs}
    assert clipped["gru_t4_clip1"] == "1.0" and clipped["gru_t4_noclip"] == "None"
    assert all("test_mse" in r.data.metrics for r in runs)


def test_without_a_study_the_stages_write_empty_outputs(workspace):
    params = config.validate(tiny_params())
    study.prepare_data(params)
    results = study.run_study(params)
    assert results.empty and (paths.STUDY / "runs").is_dir() and paths.STUDY_DATA.is_dir()
    assert "No long-term dependency study" in (paths.STUDY / "study.md").read_text()


@pytest.mark.parametrize("changes, message", [
    ({"cells": ["mlp"]}, "'mlp' does not do sequence_regression"),
    ({"cells": ["transformer"]}, "unknown architecture"),
    ({"lengths": [1]}, "greater than or equal to 2"),
    ({"training.steps_per_epoch": None}, "set steps_per_epoch"),
    ({"training.early_stopping_patience": 3}, "early_stopping_patience must be 0"),
    ({"training.clipnorm": 1.0}, "leave clipnorm/clipvalue unset"),
    ({"hyperparameters": {"units": 0}}, "study.hyperparameters.units"),
])
def test_bad_study_params_are_one_line_errors(changes, message):
    with pytest.raises(config.ParamsError, match=message) as error:
        _params(**changes)
    assert "\n" not in str(error.value)
