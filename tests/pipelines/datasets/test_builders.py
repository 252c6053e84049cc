"""The TFDS builders (embedded data) and the catalog path under tfds.testing.mock_data."""

import gzip

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pipelines import datasets, tasks
from pipelines.datasets.builders import FASHION_MNIST_FILES, FASHION_MNIST_LABELS, RawDataError, read_idx


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path):
    """Fashion-MNIST in its original IDX format: 30 train and 12 test images."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw" / "fashion_mnist"
    raw.mkdir(parents=True)
    for split, n in (("train", 30), ("test", 12)):
        images, labels = FASHION_MNIST_FILES[split]
        write_idx(raw / images, rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / labels, np.arange(n) % 10)
    return tmp_path


def test_read_idx_roundtrip_and_corruption(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "ok.gz", data)
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.gz", 3), data)
    with pytest.raises(RawDataError, match="bad IDX magic"):
        read_idx(tmp_path / "ok.gz", 1)
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        dims = b"".join(n.to_bytes(4, "big") for n in (2, 3, 4))
        f.write(bytes([0, 0, 8, 3]) + dims + b"\0" * 5)
    with pytest.raises(RawDataError, match="5 bytes of data for shape"):
        read_idx(tmp_path / "short.gz", 3)
    (tmp_path / "notgz.gz").write_bytes(b"plain text")
    with pytest.raises(RawDataError, match="corrupt raw data file"):
        read_idx(tmp_path / "notgz.gz", 3)
    with pytest.raises(RawDataError, match="missing raw data file .*make data"):
        read_idx(tmp_path / "absent.gz", 3)


def test_fashion_mnist_builder_matches_the_catalog_features(tiny_fashion):
    datasets.prepare("fashion_mnist", data_dir=tiny_fashion / "tfds", raw_dir=tiny_fashion / "raw")
    splits = datasets.load("fashion_mnist", validation_percent=10, data_dir=tiny_fashion / "tfds")
    catalog = tfds.builder("fashion_mnist").info   # the catalog's code, no download
    ours = splits.info
    assert ours.features["image"].shape == catalog.features["image"].shape == (28, 28, 1)
    assert ours.features["image"].dtype == catalog.features["image"].dtype
    assert ours.features["label"].names == catalog.features["label"].names == FASHION_MNIST_LABELS
    assert set(ours.splits) == {"train", "test"}
    assert (ours.splits["train"].num_examples, ours.splits["test"].num_examples) == (30, 12)
    assert ours.supervised_keys == catalog.supervised_keys
    assert splits.task == "image_classification"
    labels = [int(y) for _, y in splits.test]
    assert sorted(labels) == sorted(np.arange(12) % 10)
    assert sum(1 for _ in splits.train) + sum(1 for _ in splits.validation) == 30


def test_fashion_mnist_builder_rejects_mismatched_files(tiny_fashion):
    raw = tiny_fashion / "raw" / "fashion_mnist"
    write_idx(raw / FASHION_MNIST_FILES["test"][1], np.arange(5) % 10)
    with pytest.raises(RawDataError, match="has 12 images but .* has 5 labels"):
        datasets.prepare("fashion_mnist", data_dir=tiny_fashion / "tfds", raw_dir=tiny_fashion / "raw")


def test_missing_raw_data_names_the_file(tmp_path):
    with pytest.raises(RawDataError, match="missing raw data for 'digits' in .*raw/digits; run `make data`"):
        datasets.prepare("digits", data_dir=tmp_path / "tfds", raw_dir=tmp_path / "raw")
    (tmp_path / "raw" / "digits").mkdir(parents=True)
    (tmp_path / "raw" / "digits" / "other.txt").write_text("x")
    with pytest.raises(RawDataError, match="missing raw data file .*digits.csv.gz; run `make data`"):
        datasets.prepare("digits", data_dir=tmp_path / "tfds", raw_dir=tmp_path / "raw")


def test_digits_builder(tfds_dir):
    splits = datasets.load("digits", validation_percent=20, data_dir=tfds_dir / "digits")
    assert tasks.get(splits.task).input_shape(splits) == (8, 8, 1)
    assert splits.info.splits["train"].num_examples + splits.info.splits["test"].num_examples == 1797
    assert splits.info.splits["test"].num_examples == 359
    image, label = next(iter(splits.test))
    assert image.dtype.name == "uint8" and image.numpy().max() <= 255 and 0 <= int(label) < 10
    x, y = tasks.get(splits.task).arrays(splits.test)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert len(np.unique(y)) == 10


def test_unprepared_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared .*dvc repro prepare"):
        datasets.load("digits", 10, data_dir=tmp_path)


@pytest.mark.parametrize("name", ["tfds/fashion_mnist", "tfds/mnist"])
def test_catalog_path_under_mock_data(name, tmp_path):
    with tfds.testing.mock_data(num_examples=16):
        splits = datasets.load(name, validation_percent=10, data_dir=tmp_path)
        assert splits.task == "image_classification"
        assert tasks.get(splits.task).input_shape(splits) == (28, 28, 1)
        assert len(splits.class_names) == 10
        x, y = tasks.get(splits.task).arrays(splits.test)
    assert x.shape[1:] == (28, 28, 1) and x.dtype == np.float32 and y.shape == (len(x),)


def test_dataset_names():
    datasets.check_name("digits")
    datasets.check_name("tfds/cifar10")
    with pytest.raises(ValueError, match=r"or a TFDS catalog name as 'tfds/<name>'"):
        datasets.check_name("tfds/")


def test_catalog_text_corpus_becomes_character_windows_in_text_order(tmp_path):
    """`tfds/tiny_shakespeare` (online: one example holding each split's text) is cut into
    windows like the fortunes; under mock_data the texts are ours."""
    import tensorflow as tf

    from pipelines.datasets.shared import CHARACTERS
    from pipelines.datasets.text import ArchlabFortunes

    texts = {"train": "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40,
             "test": "All:\nSpeak, speak.\n" * 30, "validation": "x"}

    def as_dataset(self, split, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"text": [texts[str(split)]]})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        splits = datasets.load("tfds/tiny_shakespeare", validation_percent=10, data_dir=tmp_path)
        task = tasks.get(splits.task)
        assert splits.task == "language_modelling" and splits.vocabulary == CHARACTERS
        assert task.input_shape(splits) == (ArchlabFortunes.WINDOW,) and splits.class_names is None
        parts = {name: task.arrays(getattr(splits, name)) for name in ("train", "validation", "test")}
    width = ArchlabFortunes.WINDOW
    assert len(parts["train"][0]) == round((len(texts["train"]) - 1) // width * 90 / 100)
    for name, source in (("train", texts["train"]), ("test", texts["test"])):
        windows, targets = parts[name]
        read = "".join(CHARACTERS[i] for i in windows.reshape(-1))
        assert read == source[:len(read)]
        np.testing.assert_array_equal(windows.reshape(-1)[1:], targets.reshape(-1)[:-1])
    following = "".join(CHARACTERS[i] for i in parts["validation"][0][0])
    assert following == texts["train"][len(parts["train"][0]) * width:][:width]   # the tail of train
