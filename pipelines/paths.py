"""One place for every path: the project root and the folders derived from it.

DVC experiments (`dvc exp run --temp`) run in a temporary copy under
`.dvc/tmp/exps/`; the MLflow store must still be the original repo's, so
`tracking_root()` walks out of such a copy.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"
DATA = ROOT / "data"
DATA_DVC = ROOT / "data.dvc"
OUTPUTS = ROOT / "outputs"
TFDS_DIR = OUTPUTS / "tfds"           # one folder per dataset: `prepare@<dataset>`'s output
CHECKS = OUTPUTS / "checks"           # `check@<lane>`'s stamps
EXPERIMENTS = OUTPUTS / "experiments"
REPORT = OUTPUTS / "report"
STUDY = OUTPUTS / "study"             # the long-term dependency study
ANOMALY = OUTPUTS / "anomaly"         # one-class anomaly detection
UNFOLD = OUTPUTS / "unfold"           # unfolded computational graphs
UNFOLD_FIGURES = ("rolled.png", "unrolled.png", "tree.png")   # in UNFOLD
STUDY_DATA = OUTPUTS / "study_tfds"   # its adding-problem datasets
STUDY_FIGURE = "mse_vs_length.png"   # in STUDY: test MSE against T
ANOMALY_FIGURE = "roc_auc.png"        # in ANOMALY: ROC-AUC per normal class
# Wall-clock figures (training time, latency) differ per machine and per run, so they
# live in this file beside a stage's DVC outputs, outside DVC (see .dvcignore).
TIMINGS = "timings.json"
# The fingerprint of the machine that trained a model (`tracking.fingerprint`), beside it
# outside DVC for the same reason; the report gathers them into its machines.json.
MACHINE = "machine.json"


def tracking_root(root: Path = ROOT) -> Path:
    """The repo whose `mlflow/` holds the store: outside any DVC temp copy."""
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tfds_dir(dataset: str) -> Path:
    """Where `prepare@<dataset>` writes the TFDS dataset `dataset`."""
    return TFDS_DIR / dataset


def experiment_dir(name: str) -> Path:
    return EXPERIMENTS / name


def train_dir(name: str) -> Path:
    return experiment_dir(name) / "train"


def eval_dir(name: str) -> Path:
    return experiment_dir(name) / "eval"


def export_dir(name: str) -> Path:
    return experiment_dir(name) / "export"
