"""`make gpu-check`: training throughput of the CNN and LSTM builders under float32,
mixed_bfloat16 and XLA, on any Keras 3 backend; TensorFlow not needed.

    KERAS_BACKEND=jax python -m pipelines.gpu_check [--out outputs/gpu_check] [--seconds 8]
    python -m pipelines.gpu_check --wheels     # what to carry to a machine without archlab's venv

Made for a lent GPU machine that has JAX (or PyTorch) with CUDA and nothing of archlab's: it
imports only `models` (Keras and pydantic) and NumPy, and trains on arrays made here: images
of 28x28 pixels whose class sets a stroke's place (Fashion-MNIST's shape), and sequences of
29 steps of 12 channels whose class sets their level (Japanese Vowels' shape). Each model
and setting is compiled on a short fit, then timed on fits of `--seconds` or more; the
figures are examples per second and the ratios to float32 without XLA, written as
`gpu_check.json` and `gpu_check.md` in `--out`. Under JAX, XLA off means op-by-op
dispatch (`jit_compile=False`); the JAX backend's own default is XLA on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = {   # name: (dtype policy, jit_compile)
    "float32": ("float32", False),
    "float32 + XLA": ("float32", True),
    "mixed_bfloat16": ("mixed_bfloat16", False),
    "mixed_bfloat16 + XLA": ("mixed_bfloat16", True),
}
MODELS = {   # name: (builder, hyperparameters, input shape, batch size) as in params.yaml
    "cnn": ("cnn", {"filters": [32, 64], "kernel_size": 3, "dense_units": [128], "dropout_rate": 0.3},
            (28, 28, 1), 128),
    "lstm": ("lstm", {"units": 64, "dropout_rate": 0.2, "masking": False}, (29, 12), 32),
}
CLASSES = 10
# Keras and its small dependencies, and pydantic (the hyperparameter schemas), for a machine
# that has NumPy and a backend (JAX or PyTorch with CUDA) but none of archlab's venv: the
# versions of requirements.lock.
WHEELS = ("keras", "absl-py", "h5py", "ml-dtypes", "namex", "optree", "rich", "markdown-it-py", "mdurl",
          "pygments", "packaging", "pydantic", "pydantic-core", "annotated-types", "typing-extensions",
          "typing-inspection")


def data(shape: tuple[int, ...], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` learnable examples of `shape` and their labels: the class shifts a bright band."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    x = 0.1 * rng.standard_normal((n, *shape)).astype(np.float32)
    rows = shape[0] // CLASSES
    for c in range(CLASSES):
        x[labels == c, c * rows:(c + 1) * rows] += 1.0
    return x, labels


def throughput(name: str, setting: str, seconds: float) -> float:
    """Training examples per second of model `name` under `setting`, compiled first."""
    import keras

    import models

    builder, hyperparameters, shape, batch = MODELS[name]
    policy, jit = SETTINGS[setting]
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(policy)
    try:
        model = models.build(builder, shape, CLASSES, hyperparameters)
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit)
    x, y = data(shape, batch * 20)
    model.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0)   # compile
    examples, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or examples == 0:
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        examples += len(x)
    return examples / elapsed


def machine() -> dict[str, str]:
    import keras

    found = {"keras": keras.__version__, "backend": keras.backend.backend(), "python": platform.python_version(),
             "host": platform.node()}
    if keras.backend.backend() == "jax":
        import jax

        found.update(jax=jax.__version__, devices=", ".join(d.device_kind for d in jax.devices()))
    elif keras.backend.backend() == "torch":
        import torch

        found.update(torch=torch.__version__,
                     devices=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    return found


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['machine'].get('devices', 'cpu')}, Keras {report['machine']['keras']} "
             f"({report['machine']['backend']})", "",
             "| model | setting | examples/s | × float32 |", "|---|---|---:|---:|"]
    for name, rows in report["results"].items():
        for setting, row in rows.items():
            lines.append(f"| {name} | {setting} | {row['examples_per_second']:,.0f} | {row['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def wheels() -> str:
    """The pinned wheels to carry and the commands that carry and run the check."""
    lock = Path(__file__).resolve().parent.parent / "requirements.lock"
    pins = dict(line.split("==", 1) for line in lock.read_text().split() if "==" in line)
    missing = [w for w in WHEELS if w not in pins]
    if missing:
        raise SystemExit(f"error: requirements.lock has no pin for {', '.join(missing)}")
    specs = " ".join(f"{w}=={pins[w]}" for w in WHEELS)
    return (f"pip download --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 "
            f"-d shared/wheels {specs}\n"
            "# then, on the GPU machine (it has NumPy and JAX with CUDA):\n"
            "pip install --no-deps --target /tmp/site shared/wheels/*.whl && "
            "PYTHONPATH=/tmp/site:. KERAS_BACKEND=jax python -m pipelines.gpu_check --out $OUT\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"))
    parser.add_argument("--seconds", type=float, default=8.0, help="timed fits per model and setting (8 s)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--wheels", action="store_true", help="print the wheels to carry and the commands")
    args = parser.parse_args(argv)
    if args.wheels:
        print(wheels(), end="")
        return
    os.environ.setdefault("KERAS_BACKEND", "jax")
    report = {"machine": machine(), "seconds": args.seconds, "results": {}}
    for name in args.models:
        rows = {}
        for setting in SETTINGS:
            rows[setting] = {"examples_per_second": round(throughput(name, setting, args.seconds), 1)}
            print(f"{name} {setting}: {rows[setting]['examples_per_second']:,.0f} examples/s", flush=True)
        base = rows["float32"]["examples_per_second"]
        for row in rows.values():
            row["ratio"] = round(row["examples_per_second"] / base, 3)
        report["results"][name] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report))
    sys.stdout.write(markdown(report))


if __name__ == "__main__":
    main()
