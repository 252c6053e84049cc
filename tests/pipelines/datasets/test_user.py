"""The user's datasets (`pipelines/datasets/user.py`): a folder of images, a CSV series and a
text become TFDS datasets like the embedded ones, and bad data is refused with one line
naming the file (and row) and the cause, before anything is written."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from PIL import Image

from edge import runner
from models.streaming import Stepper, step_model
from pipelines import config, dag, datasets, evaluate, export, paths, report, train
from pipelines.datasets import RawDataError
from pipelines.datasets.shared import CHARACTERS
from pipelines.schema import ParamsError

TRAINING = {"epochs": 1, "batch_size": 8, "learning_rate": 0.01}


def write_images(folder: Path, classes: dict[str, int], size=(12, 10), seed: int = 0, mode: str = "RGB") -> None:
    """`classes[c]` PNG images in `folder/c/`, each class at its own brightness."""
    rng = np.random.default_rng(seed)
    for k, (c, n) in enumerate(classes.items()):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.clip(60 * k + rng.integers(0, 40, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).convert(mode).save(folder / c / f"{i:02d}.png")


def write_csv(path: Path, rows: int = 300, header: str = "time,y,x", cell=None) -> np.ndarray:
    """A CSV of a sine `y` and a cosine `x` (and a time column); `cell(row, column)` may
    replace a value's text. Returns y."""
    t = np.arange(rows)
    y, x = np.sin(t / 5) + 0.01 * t, np.cos(t / 7)
    lines = [header]
    for i in t:
        values = [str(i), f"{y[i]:.6f}", f"{x[i]:.6f}"]
        if cell is not None:
            values = [cell(i, j, v) for j, v in enumerate(values)]
        lines.append(",".join(values))
    path.write_text("\n".join(lines) + "\n")
    return y


def use(name: str, entry: dict) -> None:
    """Register one user dataset as params.yaml would (checked by its schema)."""
    params = config.validate({"datasets": [name], "user_datasets": {name: entry}, "experiments": {
        "e": {"architecture": "mlp" if entry["kind"] == "images" else "lstm" if entry["kind"] == "csv" else "rnn_lm",
              "dataset": name, "seed": 0, "training": TRAINING, "export": {"variants": ["float32"]}}}})
    assert name in params.user_datasets


def prepared(name: str, entry: dict, tmp_path: Path) -> datasets.Splits:
    use(name, entry)
    datasets.prepare(name, data_dir=tmp_path / "tfds" / name)
    return datasets.load(name, 10, data_dir=tmp_path / "tfds" / name)


@pytest.fixture(autouse=True)
def no_user_datasets_after():
    yield
    datasets.use_user_datasets({})


def test_an_image_folder_is_split_per_class_with_its_seed_and_resized(tmp_path):
    write_images(tmp_path / "pics", {"cat": 10, "dog": 5}, size=(12, 10))
    entry = {"kind": "images", "path": str(tmp_path / "pics"), "image_size": [8, 6], "channels": 1}
    splits = prepared("pics", entry, tmp_path)
    assert splits.task == "image_classification" and splits.class_names == ["cat", "dog"]
    assert splits.input_shape == (8, 6, 1)
    counts = {s: splits.info.splits[s].num_examples for s in ("train", "test")}
    assert counts == {"train": 8 + 4, "test": 2 + 1}   # 20 % of each class, at least one
    test = list(splits.builder.as_dataset(split="test").as_numpy_iterator())
    again = prepared("pics2", {**entry, "path": str(tmp_path / "pics")}, tmp_path)
    assert sorted(e["file"] for e in test) == sorted(e["file"] for e in again.builder.as_dataset(
        split="test").as_numpy_iterator())                 # the same seed, the same split
    other = prepared("pics3", {**entry, "seed": 5}, tmp_path)
    assert sorted(e["file"] for e in test) != sorted(e["file"] for e in other.builder.as_dataset(
        split="test").as_numpy_iterator())
    # a dog image, resized and grey, as Pillow makes it
    first = next(e for e in test if e["file"].startswith(b"dog/"))
    expected = Image.open(tmp_path / "pics" / first["file"].decode()).convert("L").resize((6, 8),
                                                                                          Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(first["image"][..., 0], np.asarray(expected))


def test_train_and_test_folders_are_the_splits_and_one_size_needs_no_resizing(tmp_path):
    write_images(tmp_path / "pics" / "train", {"a": 4, "b": 3})
    write_images(tmp_path / "pics" / "test", {"a": 2, "b": 1}, seed=1)
    splits = prepared("pics", {"kind": "images", "path": str(tmp_path / "pics")}, tmp_path)
    assert {s: splits.info.splits[s].num_examples for s in ("train", "test")} == {"train": 7, "test": 3}
    assert splits.input_shape == (12, 10, 3)
    files = {e["file"].decode() for e in splits.builder.as_dataset(split="test").as_numpy_iterator()}
    assert files == {"test/a/00.png", "test/a/01.png", "test/b/00.png"}


def test_a_csv_series_is_windowed_in_order_and_scaled_with_its_training_rows(tmp_path):
    y = write_csv(tmp_path / "s.csv", rows=300)
    splits = prepared("sales", {"kind": "csv", "path": str(tmp_path / "s.csv"), "column": "y", "inputs": ["x"],
                                "window": 16, "test_percent": 25}, tmp_path)
    assert splits.task == "forecasting" and splits.input_shape == (16, 2)
    boundary = 225   # the last 25 % of 300 rows
    train = y[:boundary]
    scaled = (y - train.mean()) / train.std()
    np.testing.assert_allclose(splits.series("train"), scaled[:boundary], atol=1e-5)
    np.testing.assert_allclose(splits.series("test"), scaled[boundary:], atol=1e-5)
    assert splits.info.splits["test"].num_examples == 300 - boundary - 16
    test = sorted(splits.builder.as_dataset(split="test").as_numpy_iterator(), key=lambda e: e["position"])
    assert [e["position"] for e in test] == list(range(boundary + 16, 300))
    x = np.cos(np.arange(300) / 7)
    x_scaled = (x - x[:boundary].mean()) / x[:boundary].std()
    last = test[-1]
    np.testing.assert_allclose(last["window"][:, 0], scaled[-17:-1], atol=1e-5)
    np.testing.assert_allclose(last["window"][:, 1], x_scaled[-17:-1], atol=1e-5)
    np.testing.assert_allclose(last["target"], scaled[-1], atol=1e-5)


def test_a_spreadsheets_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    from pipelines.datasets.user import read_series

    (tmp_path / "s.csv").write_bytes("\ufeffy;x\n".replace(";", ",").encode("utf-8") + b"1.5,2\n2.5,3\n")
    np.testing.assert_array_equal(read_series(tmp_path / "s.csv", ["y", "x"]), [[1.5, 2], [2.5, 3]])


def test_a_text_folder_is_joined_in_name_order_and_its_end_held_out(tmp_path):
    (tmp_path / "texts" / "b").mkdir(parents=True)
    (tmp_path / "texts" / "a.txt").write_text("first file. " * 30)
    (tmp_path / "texts" / "b" / "c.txt").write_text("second file, café. " * 30)
    (tmp_path / "texts" / "notes.md").write_text("not read")
    splits = prepared("poems", {"kind": "text", "path": str(tmp_path / "texts"), "window": 20, "test_percent": 20},
                      tmp_path)
    assert splits.task == "language_modelling" and splits.vocabulary[3] == " "
    text = "first file. " * 30 + "\n" + "second file, café. " * 30 + "\n"
    boundary = round(len(text) * 0.8)

    def read(split):
        ids = np.concatenate([e["window"] for e in splits.builder.as_dataset(split=split).as_numpy_iterator()])
        return "".join(splits.vocabulary[i] for i in ids)

    assert text[:boundary].replace("é", "<unk>").startswith(read("train"))
    assert text[boundary:].replace("é", "<unk>").startswith(read("test"))
    assert len(read("test")) > 0


def images_with(tmp_path: Path, change) -> Path:
    write_images(tmp_path / "pics", {"a": 5, "b": 5})
    change(tmp_path / "pics")
    return tmp_path / "pics"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


BAD_IMAGES = [  # (case, how the folder is spoilt, the error's file, its cause)
    ("missing path", lambda p: __import__("shutil").rmtree(p), "pics", "no such file or folder"),
    ("empty folder", lambda p: [__import__("shutil").rmtree(c) for c in p.iterdir()], "pics", "no class folders"),
    ("a class with one image", lambda p: [(p / "b" / f"0{i}.png").unlink() for i in (1, 2, 3, 4)], "pics/b",
     "1 image; a class needs at least 2"),
    ("an unreadable image", lambda p: (p / "a" / "01.png").write_bytes(b"not an image"), "pics/a/01.png",
     "not an image Pillow can read"),
    ("a truncated image", lambda p: truncate(p / "b" / "02.png"), "pics/b/02.png", "unreadable image"),
    ("images of mixed sizes", lambda p: Image.new("RGB", (7, 9)).save(p / "b" / "01.png"), "pics/b/01.png",
     "9x7 pixels, not 12x10 as the first image; set image_size"),
]


@pytest.mark.parametrize("case, spoil, file, cause", BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_bad_images_are_refused_naming_the_file_and_nothing_is_written(tmp_path, case, spoil, file, cause):
    folder = images_with(tmp_path, spoil)
    use("pics", {"kind": "images", "path": str(folder)})
    out = tmp_path / "tfds" / "pics"
    with pytest.raises(RawDataError) as refused:
        datasets.prepare("pics", data_dir=out)
    message = str(refused.value)
    assert message.startswith(str(tmp_path / file)) and cause in message and "\n" not in message
    assert not list(out.rglob("*.tfrecord*"))


def test_images_of_mixed_sizes_are_resized_when_image_size_is_set(tmp_path):
    folder = images_with(tmp_path, lambda p: Image.new("RGB", (7, 9)).save(p / "b" / "01.png"))
    splits = prepared("pics", {"kind": "images", "path": str(folder), "image_size": [12, 10]}, tmp_path)
    assert splits.info.splits["train"].num_examples + splits.info.splits["test"].num_examples == 10


BAD_SERIES = [  # (case, the CSV's header and cell edits, settings, the error's cause)
    ("a missing column", {"header": "time,z,x"}, {}, "no column 'y'; its columns: time, z, x"),
    ("a missing input column", {}, {"inputs": ["w"]}, "no column 'w'"),
    ("a non-numeric value", {"cell": lambda i, j, v: "abc" if (i, j) == (40, 1) else v}, {},
     "row 42: column 'y' is 'abc', not a number"),
    ("a missing value", {"cell": lambda i, j, v: "" if (i, j) == (7, 2) else v}, {"inputs": ["x"]},
     "row 9: missing value in column 'x'"),
    ("a NaN", {"cell": lambda i, j, v: "nan" if (i, j) == (3, 1) else v}, {}, "row 5: missing value in column 'y'"),
    ("a series shorter than a window", {"rows": 40}, {"window": 16}, "40 rows, too few for windows of 16"),
]


@pytest.mark.parametrize("case, csv, settings, cause", BAD_SERIES, ids=[b[0] for b in BAD_SERIES])
def test_bad_series_are_refused_naming_the_file_and_row(tmp_path, case, csv, settings, cause):
    write_csv(tmp_path / "s.csv", **csv)
    use("sales", {"kind": "csv", "path": str(tmp_path / "s.csv"), "column": "y", **settings})
    with pytest.raises(RawDataError) as refused:
        datasets.prepare("sales", data_dir=tmp_path / "tfds" / "sales")
    message = str(refused.value)
    assert message.startswith(str(tmp_path / "s.csv")) and cause in message and "\n" not in message
    assert not list((tmp_path / "tfds").rglob("*.tfrecord*"))


BAD_TEXTS = [
    ("an empty file", lambda p: p.write_text("\n \n"), "empty"),
    ("a binary file", lambda p: p.write_bytes(bytes(range(256)) * 4), "a binary file (it holds NUL bytes)"),
    ("not UTF-8", lambda p: p.write_bytes("caf\xe9 ".encode("latin-1") * 100), "not UTF-8 text"),
    ("too short", lambda p: p.write_text("short text"), "11 characters, too few for windows of 100"),
]


@pytest.mark.parametrize("case, write, cause", BAD_TEXTS, ids=[b[0] for b in BAD_TEXTS])
def test_bad_texts_are_refused_naming_the_file(tmp_path, case, write, cause):
    write(tmp_path / "t.txt")
    use("poems", {"kind": "text", "path": str(tmp_path / "t.txt")})
    with pytest.raises(RawDataError) as refused:
        datasets.prepare("poems", data_dir=tmp_path / "tfds" / "poems")
    assert str(refused.value).startswith(str(tmp_path / "t.txt")) and cause in str(refused.value)


def test_files_inside_data_are_refused(tmp_path, monkeypatch):
    """data/ is the embedded raw data, versioned whole by data.dvc."""
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    (tmp_path / "data" / "mine").mkdir(parents=True)
    use("poems", {"kind": "text", "path": str(tmp_path / "data" / "mine")})
    with pytest.raises(RawDataError, match=r"mine: inside .*data, which data.dvc versions .*e\.g\. user_data/"):
        datasets.prepare("poems", data_dir=tmp_path / "tfds" / "poems")


def test_a_folder_without_text_files_is_refused(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.md").write_text("markdown " * 50)
    use("poems", {"kind": "text", "path": str(tmp_path / "texts")})
    with pytest.raises(RawDataError, match=r"texts: no \.txt files in the folder"):
        datasets.prepare("poems", data_dir=tmp_path / "tfds" / "poems")


@pytest.mark.parametrize("entry, error", [
    ({"kind": "video", "path": "x"}, r"user_datasets\.mine\.kind: expected one of images, csv, text \(got 'video'\)"),
    ({"kind": "images"}, r"user_datasets\.mine\.path: Field required"),
    ({"kind": "images", "path": "x", "channels": 2}, r"user_datasets\.mine\.channels"),
    ({"kind": "csv", "path": "x"}, r"user_datasets\.mine\.column: Field required"),
    ({"kind": "csv", "path": "x", "column": "y", "inputs": ["y"]}, r"inputs: each column once"),
    ({"kind": "text", "path": "x", "windw": 3}, r"`user_datasets\.mine\.windw`: unknown key; did you mean `window`"),
])
def test_user_dataset_settings_are_checked_with_the_key_named(entry, error):
    with pytest.raises(ParamsError, match=error):
        use("mine", entry)


def test_a_user_dataset_may_not_take_an_embedded_name_and_must_be_listed_to_be_used():
    with pytest.raises(ParamsError, match=r"user_datasets\.digits: .*not an embedded dataset's"):
        use("digits", {"kind": "images", "path": "x"})
    with pytest.raises(ParamsError, match=r"experiments\.e\.dataset: 'pics' is not in datasets"):
        config.validate({"datasets": ["digits"], "user_datasets": {"pics": {"kind": "images", "path": "x"}},
                         "experiments": {"e": {"architecture": "mlp", "dataset": "pics", "seed": 0,
                                               "training": TRAINING, "export": {}}}})


def test_a_user_dataset_has_a_stage_of_its_own_on_its_files_and_settings(tmp_path):
    """Its files (here outside the repository, by absolute path) and its params.yaml entry are
    the dependencies of `prepare_user@<name>` alone; its output persists across a failed run."""
    params = config.validate({"datasets": ["digits", "pics"],
                              "user_datasets": {"pics": {"kind": "images", "path": str(tmp_path / "pics")}},
                              "experiments": {"e": {"architecture": "mlp", "dataset": "pics", "seed": 0,
                                                    "training": TRAINING, "export": {}}}})
    stages = dag.resolved(params)
    stage = stages["prepare_user@pics"]
    assert stage["deps"][0] == str(tmp_path / "pics") and stage["params"] == ["user_datasets.pics"]
    assert stage["outs"] == [{"outputs/tfds/pics": {"persist": True}}]
    assert "pipelines/datasets/user.py" in stage["deps"] and "pipelines/datasets/user.py" in stages["train@e"]["deps"]
    assert [name for name, s in stages.items() if str(tmp_path / "pics") in s["deps"]] == ["prepare_user@pics"]
    assert "pipelines/datasets/user.py" not in stages["prepare@digits"]["deps"]


def test_the_prepare_command_prints_one_line_and_exits_non_zero(tmp_path):
    """What `dvc repro` shows: the stage's command fails with the cause on one line."""
    folder = images_with(tmp_path, lambda p: (p / "a" / "01.png").write_bytes(b"junk"))
    params = {"datasets": ["pics"], "user_datasets": {"pics": {"kind": "images", "path": str(folder)}},
              "experiments": {"e": {"architecture": "mlp", "dataset": "pics", "seed": 0, "training": TRAINING,
                                    "export": {}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = ("from pathlib import Path; from pipelines import config, paths, prepare, runtime; "
            f"paths.TFDS_DIR = Path({str(tmp_path)!r}) / 'tfds'; "
            f"runtime.run_stage(lambda: prepare.prepare('pics', config.load(Path({str(tmp_path / 'params.yaml')!r}))))")
    run = subprocess.run([sys.executable, "-c", code], cwd=paths.ROOT, capture_output=True, text=True)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {folder / 'a' / '01.png'}: not an image Pillow can read"], run.stderr[-2000:]
    assert not (tmp_path / "tfds" / "pics").exists()


KINDS = {  # one dataset of each kind, and experiments on them (an autoencoder too: reconstruction)
    "pics": ({"kind": "images", "path": "pics", "image_size": [8, 8], "channels": 1},
             {"pics_cnn": ("cnn", {"filters": [4], "dense_units": [8]}),
              "pics_ae": ("autoencoder", {"code_size": 4})}),
    "sales": ({"kind": "csv", "path": "sales.csv", "column": "y", "inputs": ["x"], "window": 8},
              {"sales_lstm": ("lstm", {"units": 4})}),
    "poems": ({"kind": "text", "path": "poems", "window": 20},
              {"poems_lm": ("rnn_lm", {"cell": "gru", "units": 8, "embedding_dim": 4})}),
}


def write_kinds(root: Path) -> None:
    """The files of `KINDS`, under `root`."""
    write_images(root / "pics", {"circle": 12, "square": 12, "stripe": 12})
    write_csv(root / "sales.csv", rows=240)
    (root / "poems").mkdir(parents=True)
    (root / "poems" / "one.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 30)
    (root / "poems" / "two.txt").write_text("pack my box with five dozen liquor jugs.\n" * 20)


def test_each_kind_is_trained_evaluated_exported_and_reported(workspace, tmp_path, monkeypatch):
    write_kinds(tmp_path / "mine")
    monkeypatch.setattr(paths, "TFDS_DIR", tmp_path / "tfds")
    experiments = {name: {"architecture": arch, "dataset": dataset, "seed": 1, "hyperparameters": hyper,
                          "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01},
                          "export": {"variants": ["float32"], "latency_runs": 3, "parity_examples": 20}}
                   for dataset, (_, exps) in KINDS.items() for name, (arch, hyper) in exps.items()}
    params = config.validate({
        "datasets": list(KINDS), "experiments": experiments,
        "user_datasets": {n: {**entry, "path": str(tmp_path / "mine" / entry["path"])}
                          for n, (entry, _) in KINDS.items()}})
    for name in KINDS:
        datasets.prepare(name, data_dir=paths.tfds_dir(name))
    metrics = {}
    for name in experiments:
        train.train(name, params)
        metrics[name] = evaluate.evaluate(name, params)
        assert export.export(name, params)["tflite_float32_max_abs_diff"] <= 1e-4, name
    assert metrics["pics_cnn"]["test_examples"] == 3 * 2 and 0 <= metrics["pics_cnn"]["test_accuracy"] <= 1
    assert metrics["pics_ae"]["test_reconstruction_mse"] > 0
    assert metrics["sales_lstm"]["test_nrmse"] > 0 and metrics["sales_lstm"]["baseline_nrmse"] > 0
    assert not any(k.startswith("free_run") for k in metrics["sales_lstm"])   # input columns: no free run
    assert metrics["sales_lstm"]["test_nrmse_stream"] > 0                     # streamed one step ahead
    # a device streams the user's own CSV (its time column too: columns by name) in its units
    folder = paths.export_dir("sales_lstm") / "tflite"
    spec = json.loads((folder / "stream.json").read_text())
    assert spec["columns"] == ["y", "x"] and spec["channels"] == 2
    out = tmp_path / "forecasts.npy"
    assert runner.main(["forecast", str(folder), str(tmp_path / "mine" / "sales.csv"), "--output", str(out)]) == 0
    raw = np.loadtxt(tmp_path / "mine" / "sales.csv", delimiter=",", skiprows=1)[:, 1:3]   # y, x
    points = ((raw - spec["mean"]) / spec["std"]).astype(np.float32)
    step = step_model(keras.models.load_model(paths.train_dir("sales_lstm") / "model.keras"))
    expected = Stepper(step).read(points[None])[0][0] * spec["std"][0] + spec["mean"][0]
    np.testing.assert_allclose(np.load(out), expected, atol=1e-4 * spec["std"][0])
    assert 0 < metrics["poems_lm"]["test_bpc"] < math.log2(len(CHARACTERS))   # better than uniform guessing
    frame = report.report(params)
    assert set(frame["experiment"]) == set(experiments)
    assert set(frame["task"]) == {"image_classification/pics", "reconstruction/pics", "forecasting/sales",
                                  "language_modelling/poems"}
    summary = json.loads((paths.REPORT / "summary.json").read_text())
    assert set(summary) == set(experiments)
