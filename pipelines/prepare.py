"""DVC stage `prepare@<dataset>`: build one dataset of `params.yaml: datasets` with TFDS.

    python -m pipelines.prepare <dataset>

An embedded dataset is built from `data/<dataset>/` (run `make data` first), a generated
one from its seed, a catalog one (`tfds/<name>`) is downloaded by TFDS. The result is
`outputs/tfds/<dataset>/`, which only that dataset's experiments read.
"""

from __future__ import annotations

import argparse
import logging

from pipelines import config, datasets, paths, runtime

log = logging.getLogger("archlab.prepare")


def prepare(name: str, params: config.Params) -> None:
    if name not in params.datasets:
        raise config.ParamsError(f"dataset {name!r} is not in params.yaml's datasets ({', '.join(params.datasets)})")
    with runtime.atomic_dir(paths.tfds_dir(name)) as out:
        log.info("preparing %s", name)
        datasets.prepare(name, data_dir=out)
        info = datasets.builder(name, data_dir=out).info
        log.info("%s: %s", name, ", ".join(f"{s} {v.num_examples}" for s, v in info.splits.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare one dataset of params.yaml with TFDS.")
    parser.add_argument("dataset", help="a name in `datasets` of params.yaml")
    args = parser.parse_args(argv)
    runtime.run_stage(lambda: prepare(args.dataset, config.load()))


if __name__ == "__main__":
    main()
