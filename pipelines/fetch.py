"""Fetch the embedded datasets' raw files into `data/` (`make data`).

- fashion_mnist: the original IDX files from Debian's `dataset-fashion-mnist`
  (`apt-get download` + `dpkg-deb -x`, no root needed when the package lists are
  current; as root, a failed download is retried after `apt-get update`).
- digits: scikit-learn's `digits.csv.gz`, copied from the installed package.

Files already present are kept; `data.dvc` versions the result (`dvc status data.dvc`).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import sklearn.datasets

from pipelines import paths
from pipelines.datasets import EMBEDDED
from pipelines.datasets.builders import DIGITS_FILE, FASHION_MNIST_FILES

log = logging.getLogger("archlab.fetch")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_PATH = Path("usr/share/datasets/fashion-mnist")


class FetchError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _publish(files: dict[str, Path], dest: Path) -> None:
    """Copy into a sibling temp folder, then rename: never a half-written `dest`."""
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, src in files.items():
        shutil.copyfile(src, staging / name)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def fetch_fashion_mnist(dest: Path) -> None:
    names = [f for pair in FASHION_MNIST_FILES.values() for f in pair]
    if all((dest / n).exists() for n in names):
        log.info("fashion_mnist: already in %s", dest)
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FetchError("fashion_mnist needs apt-get and dpkg-deb (a Debian or Ubuntu machine); "
                         f"or place {', '.join(names)} in {dest}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log.info("fashion_mnist: apt-get download %s", DEBIAN_PACKAGE)
        got = _run(["apt-get", "download", DEBIAN_PACKAGE], tmp)
        if got.returncode != 0 and os.geteuid() == 0:
            log.info("fashion_mnist: download failed, running apt-get update once")
            _run(["apt-get", "update"], tmp)
            got = _run(["apt-get", "download", DEBIAN_PACKAGE], tmp)
        debs = list(tmp.glob(f"{DEBIAN_PACKAGE}_*.deb"))
        if got.returncode != 0 or not debs:
            last = (got.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise FetchError(f"apt-get download {DEBIAN_PACKAGE} failed: {last} "
                             "(run `apt-get update` as root first)")
        extracted = tmp / "x"
        unpack = _run(["dpkg-deb", "-x", str(debs[0]), str(extracted)], tmp)
        if unpack.returncode != 0:
            raise FetchError(f"dpkg-deb -x {debs[0].name} failed: {unpack.stderr.strip()}")
        _publish({n: extracted / DEBIAN_PATH / n for n in names}, dest)
    log.info("fashion_mnist: %d files in %s", len(names), dest)


def fetch_digits(dest: Path) -> None:
    if (dest / DIGITS_FILE).exists():
        log.info("digits: already in %s", dest)
        return
    src = Path(sklearn.datasets.__file__).parent / "data" / DIGITS_FILE
    _publish({DIGITS_FILE: src}, dest)
    log.info("digits: copied %s", src)


FETCHERS = {"digits": fetch_digits, "fashion_mnist": fetch_fashion_mnist}
assert set(FETCHERS) == set(EMBEDDED), "every embedded dataset needs a fetcher"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", help=f"any of {', '.join(sorted(FETCHERS))} "
                        "(default: all)")
    parser.add_argument("--data-dir", type=Path, default=paths.DATA)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unknown = sorted(set(args.datasets) - set(FETCHERS))
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; embedded: {', '.join(sorted(FETCHERS))}")
    try:
        for name in args.datasets or sorted(FETCHERS):
            FETCHERS[name](args.data_dir / name)
    except FetchError as e:
        log.error("error: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
