"""DVC stage `prepare`: build every dataset named in `params.yaml: datasets` with TFDS.

    python -m pipelines.prepare

Embedded datasets are built from `data/<name>/` (run `make data` first); catalog
datasets (`tfds/<name>`) are downloaded by TFDS. The result is `outputs/tfds/`.
"""

from __future__ import annotations

import logging

from pipelines import config, datasets, paths, runtime

log = logging.getLogger("archlab.prepare")


def prepare(params: config.Params) -> None:
    with runtime.atomic_dir(paths.TFDS_DIR) as out:
        for name in params.datasets:
            log.info("preparing %s", name)
            datasets.prepare(name, data_dir=out)
            info = datasets.builder(name, data_dir=out).info
            log.info("%s: %s", name, ", ".join(f"{s} {v.num_examples}" for s, v in info.splits.items()))


def main() -> None:
    runtime.run_stage(lambda: prepare(config.load()))


if __name__ == "__main__":
    main()
