"""DVC stage `check@<lane>`: params.yaml checked before DVC removes any output.

    python -m pipelines.check <experiment | study | anomaly | unfold>

DVC deletes a stage's outputs before running it, so a stage cannot protect its own outputs
from a broken params.yaml. Each lane (an experiment's train, evaluate and export; the study;
the anomaly sweep) therefore starts with this stage: it checks the document's shape and the
lane's own section against its architecture (`pipelines.config`), and its output,
`outputs/checks/<lane>.ok`, is a stamp that DVC keeps (`persist`) and whose content never
changes. The lane's stages depend on it: while params.yaml is broken, `dvc repro` stops
here with a one-line error and nothing else runs or is removed; once it is mended, the
stamp is unchanged, so only stages whose own inputs changed rerun.
"""

from __future__ import annotations

import argparse

from pipelines import config, paths, runtime

STAMP = "params.yaml checked\n"


def check(lane: str, params: config.Params) -> None:
    if lane == "study":
        config.study(params)
    elif lane == "anomaly":
        config.anomaly(params)
    elif lane == "unfold":
        config.unfold(params)
    else:
        config.experiment(params, lane)
    paths.CHECKS.mkdir(parents=True, exist_ok=True)
    stamp = paths.CHECKS / f"{lane}.ok"
    if not stamp.exists() or stamp.read_text() != STAMP:
        stamp.write_text(STAMP)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check params.yaml for one lane of stages.")
    parser.add_argument("lane", help="an experiment of params.yaml, or study, anomaly or unfold")
    args = parser.parse_args(argv)
    runtime.run_stage(lambda: check(args.lane, config.load()))


if __name__ == "__main__":
    main()
