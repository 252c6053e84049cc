"""DVC stage `train@<experiment>`: fit one registered architecture on its dataset.

    python -m pipelines.train <experiment>

The generic training path (`pipelines.training.fit`) into
`outputs/experiments/<experiment>/train/`.
"""

from __future__ import annotations

from pipelines import config, stage, training


def train(name: str, params: config.Params) -> dict[str, float]:
    return training.fit(stage.open_experiment(name, params))


if __name__ == "__main__":
    stage.cli(train, "Train one experiment of params.yaml.", backend=lambda exp: exp.training.backend)
