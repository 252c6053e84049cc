"""DVC stage `evaluate@<experiment>`: score the trained model on the test split.

    python -m pipelines.evaluate <experiment>

The generic evaluation path (`pipelines.evaluation.score`) into
`outputs/experiments/<experiment>/eval/`: `metrics.json` (`test_loss`, `test_<headline>`,
e.g. `test_accuracy` or `test_nrmse`, the task's baselines, e.g. `baseline_nrmse`, and its
extra scores), `predictions.csv` (actual and predicted per test example) and the task's
pictures in `plots/` (a confusion matrix, the forecast, predicted against actual, exact
match by question length, bits per character along the text and sampled text,
reconstructions); logged to the experiment's MLflow run.
"""

from __future__ import annotations

from pipelines import config, evaluation, stage


def evaluate(name: str, params: config.Params) -> dict[str, float]:
    return evaluation.score(stage.open_experiment(name, params), stage.trained_model(name))


if __name__ == "__main__":
    stage.cli(evaluate, "Evaluate one experiment of params.yaml on its test split.")
