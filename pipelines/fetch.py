"""Fetch the embedded datasets' raw files into `data/` (`make data`).

- fashion_mnist: the original IDX files from Debian's `dataset-fashion-mnist`
  (`apt-get download` + `dpkg-deb -x`, no root needed when the package lists are
  current; as root, a failed download is retried after `apt-get update`).
- fortunes: the fortune cookie files of Debian's `fortunes` and `fortunes-min` (likewise).
- digits: scikit-learn's `digits.csv.gz`, copied from the installed package.
- japanese_vowels, santafe_laser: data files inside pinned PyPI wheels (aeon's
  `JapaneseVowels_TRAIN/TEST.ts`, reservoirpy's `santafe_laser.npy`), fetched with
  `pip download --no-deps` and checked against their SHA-256; neither package is installed.

Files already present are kept; `data.dvc` versions the result (`dvc status data.dvc`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import sklearn.datasets

from pipelines import paths
from pipelines.datasets import EMBEDDED, GENERATED
from pipelines.datasets.builders import DIGITS_FILE, FASHION_MNIST_FILES
from pipelines.datasets.sequences import JAPANESE_VOWELS_FILES, SANTA_FE_FILE

log = logging.getLogger("archlab.fetch")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_PATH = Path("usr/share/datasets/fashion-mnist")
FORTUNES_PATH = Path("usr/share/games/fortunes")


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
    fetch_debian_files("fashion_mnist", [DEBIAN_PACKAGE], DEBIAN_PATH, names, dest)


def fetch_debian_files(dataset: str, packages: list[str], folder: Path, names: list[str] | None,
                       dest: Path, exclude: tuple[str, ...] = ()) -> None:
    """`names` (None: every plain file whose name does not end with one of `exclude`) from
    `folder` inside the Debian `packages`, by `apt-get download` and `dpkg-deb -x` (no
    installation), into `dest`."""
    present = all((dest / n).exists() for n in names) if names else dest.is_dir() and any(dest.iterdir())
    if present:
        log.info("%s: already in %s", dataset, dest)
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FetchError(f"{dataset} needs apt-get and dpkg-deb (a Debian or Ubuntu machine); "
                         f"or place its files in {dest}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log.info("%s: apt-get download %s", dataset, " ".join(packages))
        got = _run(["apt-get", "download", *packages], tmp)
        if got.returncode != 0 and os.geteuid() == 0:
            log.info("%s: download failed, running apt-get update once", dataset)
            _run(["apt-get", "update"], tmp)
            got = _run(["apt-get", "download", *packages], tmp)
        debs = {p: list(tmp.glob(f"{p}_*.deb")) for p in packages}
        if got.returncode != 0 or not all(debs.values()):
            last = (got.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise FetchError(f"apt-get download {' '.join(packages)} failed: {last} "
                             "(run `apt-get update` as root first)")
        extracted = tmp / "x"
        for found in debs.values():
            unpack = _run(["dpkg-deb", "-x", str(found[0]), str(extracted)], tmp)
            if unpack.returncode != 0:
                raise FetchError(f"dpkg-deb -x {found[0].name} failed: {unpack.stderr.strip()}")
        names = names or sorted(f.name for f in (extracted / folder).iterdir()
                                if f.is_file() and not f.is_symlink() and not f.name.endswith(exclude))
        _publish({n: extracted / folder / n for n in names}, dest)
    log.info("%s: %d files in %s", dataset, len(names), dest)


def fetch_fortunes(dest: Path) -> None:
    """Debian's `fortunes` and `fortunes-min` text files (the `.dat` indexes and the `.u8`
    links to the same files left out)."""
    fetch_debian_files("fortunes", ["fortunes", "fortunes-min"], FORTUNES_PATH, None, dest,
                       exclude=(".dat",))


def fetch_digits(dest: Path) -> None:
    if (dest / DIGITS_FILE).exists():
        log.info("digits: already in %s", dest)
        return
    src = Path(sklearn.datasets.__file__).parent / "data" / DIGITS_FILE
    _publish({DIGITS_FILE: src}, dest)
    log.info("digits: copied %s", src)


# name -> (pinned wheel, {file name: (path inside the wheel, SHA-256)})
WHEEL_FILES = {
    "japanese_vowels": ("aeon==1.6.0", {
        JAPANESE_VOWELS_FILES["train"]: (
            "aeon/datasets/data/JapaneseVowels/JapaneseVowels_TRAIN.ts",
            "68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd"),
        JAPANESE_VOWELS_FILES["test"]: (
            "aeon/datasets/data/JapaneseVowels/JapaneseVowels_TEST.ts",
            "b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462"),
    }),
    "santafe_laser": ("reservoirpy==0.4.2", {
        SANTA_FE_FILE: ("reservoirpy/datasets/santafe_laser.npy",
                        "8c07281200935596f8e28bc94e1bb25e9964ab7d7f63c5e27ac87b810ac3b33a"),
    }),
}


def extract_from_wheel(wheel: Path, files: dict[str, tuple[str, str]], dest: Path) -> None:
    """Copy `files` out of a wheel into `dest`, each checked against its SHA-256."""
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as archive:
        extracted = {}
        for name, (member, sha256) in files.items():
            try:
                data = archive.read(member)
            except KeyError:
                raise FetchError(f"{wheel.name} has no {member}") from None
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256:
                raise FetchError(f"{member} in {wheel.name} has SHA-256 {digest[:12]}..., "
                                 f"expected {sha256[:12]}...")
            extracted[name] = Path(tmp) / name
            extracted[name].write_bytes(data)
        _publish(extracted, dest)


def fetch_from_wheel(name: str, dest: Path) -> None:
    requirement, files = WHEEL_FILES[name]
    if all((dest / f).exists() for f in files):
        log.info("%s: already in %s", name, dest)
        return
    with tempfile.TemporaryDirectory() as tmp:
        log.info("%s: pip download %s", name, requirement)
        got = _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--dest", tmp, requirement], Path(tmp))
        wheels = list(Path(tmp).glob("*.whl"))
        if got.returncode != 0 or not wheels:
            last = (got.stderr.strip().splitlines() or ["no wheel written"])[-1]
            raise FetchError(f"pip download {requirement} failed: {last}")
        extract_from_wheel(wheels[0], files, dest)
    log.info("%s: %d files in %s", name, len(files), dest)


FETCHERS = {"digits": fetch_digits, "fashion_mnist": fetch_fashion_mnist, "fortunes": fetch_fortunes,
            **{name: (lambda dest, name=name: fetch_from_wheel(name, dest)) for name in WHEEL_FILES}}
assert set(FETCHERS) == set(EMBEDDED) - GENERATED, "every embedded dataset with raw data needs a fetcher"


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
