"""Which kernel settings change the trained weights, on this machine: `make numerics`.

    python -m pipelines.numerics [--units 256] [--batch 256]

Trains the same seeded LSTM, GRU, MLP and 1-D CNN (two epochs on fixed random data, op
determinism on) once per setting, each in a fresh process, and prints a hash of each model's
weights: a setting that changes a hash changes the order of floating-point sums for that
model. The settings stand in for what differs between machines: the instruction sets
oneDNN may use (`ONEDNN_MAX_CPU_ISA`), oneDNN on or off (`TF_ENABLE_ONEDNN_OPTS`) and the
number of threads TensorFlow splits a product over. Writes `outputs/numerics.md`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from tqdm import tqdm

from pipelines import paths, runtime

SETTINGS = {
    "default": {},
    "default, again": {},
    "oneDNN limited to AVX-512 (no VNNI, BF16, AMX)": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "oneDNN limited to AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "one thread": {"ARCHLAB_NUMERICS_THREADS": "1"},
}
MODELS = ("lstm", "gru", "mlp", "conv")

TRAIN = """
import hashlib, os, sys
import numpy as np, keras, tensorflow as tf
units, batch = int(sys.argv[1]), int(sys.argv[2])
threads = os.environ.get("ARCHLAB_NUMERICS_THREADS")
if threads:
    tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    tf.config.threading.set_inter_op_parallelism_threads(int(threads))
tf.config.experimental.enable_op_determinism()
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 20, 12)).astype("float32")
y = (x[:, :, :3].sum(axis=(1, 2)) > 0).astype("int32")
layers = {"lstm": lambda: [keras.layers.LSTM(units)], "gru": lambda: [keras.layers.GRU(units)],
          "mlp": lambda: [keras.layers.Flatten(), keras.layers.Dense(units, activation="relu")],
          "conv": lambda: [keras.layers.Conv1D(32, 3, activation="relu"), keras.layers.GlobalAveragePooling1D()]}
for kind in sys.argv[3:]:
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((20, 12)), *layers[kind](), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch, epochs=2, verbose=0, shuffle=False)
    print(kind, hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()[:10])
"""


def weights(env: dict[str, str], units: int, batch: int, models=MODELS) -> dict[str, str]:
    """Each model's weight hash, trained in a fresh process with `env` added."""
    result = subprocess.run([sys.executable, "-c", TRAIN, str(units), str(batch), *models], capture_output=True,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}, check=False)
    if result.returncode != 0:
        raise runtime.StageError(f"training under {env or 'the defaults'} failed: {result.stderr.strip()[-300:]}")
    return dict(line.split() for line in result.stdout.splitlines() if line.split()[0] in models)


def table(units: int, batch: int) -> str:
    rows = {name: weights(env, units, batch) for name, env in tqdm(SETTINGS.items(), desc="settings")}
    base = rows["default"]
    lines = [f"# Which settings change the trained weights (units {units}, batch {batch})", "",
             "| setting | " + " | ".join(MODELS) + " |", "|---|" + "---|" * len(MODELS)]
    for name, hashes in rows.items():
        cells = [hashes[m] + ("" if hashes[m] == base[m] else " (differs)") for m in MODELS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Which kernel settings change the trained weights here.")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)

    def run() -> None:
        text = table(args.units, args.batch)
        paths.OUTPUTS.mkdir(exist_ok=True)
        (paths.OUTPUTS / "numerics.md").write_text(text)
        print(text)

    runtime.run_stage(run)


if __name__ == "__main__":
    main()
