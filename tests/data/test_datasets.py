"""Tests for tfmot_zip.data.fashion_mnist and the local tensorflow-datasets builder (real Fashion-MNIST files)."""
from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfmot_zip.data import fashion_mnist as datasets
from tfmot_zip.data.tfds_builder import load_tfds

REAL_DIR = Path(datasets.DEFAULT_FASHION_MNIST_DIR)
pytestmark = pytest.mark.skipif(
    not (REAL_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed: {datasets.INSTALL_COMMAND}",
)


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv(datasets.FASHION_MNIST_DIR_ENV, raising=False)


@pytest.mark.parametrize("split, count", [("train", 60000), ("test", 10000)])
def test_split_shapes_dtypes_ranges_and_class_balance(split, count):
    x, y = datasets.load_fashion_mnist(split)
    assert x.shape == (count, 28, 28, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # Images are multiples of 1/255 (uint8 / 255), not already-normalised data.
    assert np.allclose(x[:100] * 255.0, np.round(x[:100] * 255.0), atol=1e-4)
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, count // 10))
    # Known first labels of the official files (Ankle boot, T-shirt/top ... and Ankle boot, Pullover ...).
    expected_first = [9, 0, 0, 3, 0] if split == "train" else [9, 2, 1, 1, 6]
    assert y[:5].tolist() == expected_first


def test_loader_is_cached_and_read_only():
    x1, y1 = datasets.load_fashion_mnist("test")
    x2, y2 = datasets.load_fashion_mnist("test", data_dir=REAL_DIR)
    assert x1 is x2 and y1 is y2
    with pytest.raises(ValueError):
        x1[0, 0, 0, 0] = 0.5


def test_uint8_loader_matches_float_loader():
    raw, labels = datasets.load_fashion_mnist_uint8("test")
    x, y = datasets.load_fashion_mnist("test")
    assert raw.dtype == np.uint8 and raw.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(raw[:50].astype(np.float32) / 255.0, x[:50])


def test_bad_split_names_value_and_choices():
    with pytest.raises(ValueError, match=r"'validation'.*'train', 'test'"):
        datasets.load_fashion_mnist("validation")


def test_missing_folder_error_names_path_and_install_command(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_fashion_mnist("test", data_dir=missing)
    message = str(error.value)
    assert str(missing / "t10k-images-idx3-ubyte.gz") in message
    assert "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" in message
    assert datasets.FASHION_MNIST_DIR_ENV in message


def test_env_var_overrides_folder(tmp_path, monkeypatch):
    for name in datasets.FILENAMES["test"]:
        shutil.copy(REAL_DIR / name, tmp_path / name)
    monkeypatch.setenv(datasets.FASHION_MNIST_DIR_ENV, str(tmp_path))
    assert datasets.fashion_mnist_dir() == tmp_path
    x, y = datasets.load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28, 1)
    # The train files were not copied: the error must point into the overridden folder.
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train-images-idx3-ubyte.gz")):
        datasets.load_fashion_mnist("train")


def test_read_idx_rejects_truncated_and_non_idx_files(tmp_path):
    truncated = tmp_path / "short-idx1-ubyte.gz"
    with gzip.open(truncated, "wb") as stream:
        stream.write(bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big") + bytes(range(7)))
    with pytest.raises(ValueError, match="truncated"):
        datasets.read_idx(truncated)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an idx file"):
        datasets.read_idx(garbage)


def test_numpy_modules_do_not_import_tensorflow():
    """The data loaders, data specs and the math import only numpy/scipy (checked on their source:
    no module-level import of TensorFlow, tf_keras, Keras 3, tensorflow_datasets or of a package
    module that imports them)."""
    import ast

    root = Path(__file__).resolve().parents[2] / "tfmot_zip"
    files = [root / "data" / "fashion_mnist.py", root / "data" / "specs.py", root / "data" / "__init__.py",
             *sorted((root / "core").glob("*.py"))]
    light = {"tfmot_zip.core", "tfmot_zip.data", "tfmot_zip.data.fashion_mnist", "tfmot_zip.io"}
    for path in files:
        tree = ast.parse(path.read_text())
        top = set()
        for node in tree.body:  # module level only: imports inside functions are lazy by design
            if isinstance(node, ast.Import):
                top |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top.add(node.module)
        heavy = {m for m in top if m.split(".")[0] in {"tensorflow", "tf_keras", "keras", "tensorflow_datasets"}}
        own = {m for m in top if m.startswith("tfmot_zip") and not any(m == l or m.startswith(l + ".") for l in light)}
        assert not heavy and not own, f"{path.name} imports {heavy | own} at module level"


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """Prepare the local builder once for the module (about 15 s on 2 cores)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    load_tfds("test", data_dir=data_dir)
    return data_dir


def test_tfds_builder_matches_numpy_loader(tfds_dir):
    images, labels = datasets.load_fashion_mnist_uint8("test")
    ds = load_tfds("test", data_dir=tfds_dir, as_supervised=True)
    batch_images, batch_labels = next(iter(ds.batch(500)))
    np.testing.assert_array_equal(batch_images.numpy(), images[:500])
    np.testing.assert_array_equal(batch_labels.numpy(), labels[:500])


def test_tfds_builder_info_and_dict_examples(tfds_dir):
    from tfmot_zip.data.tfds_builder import LocalFashionMnist

    builder = LocalFashionMnist(data_dir=tfds_dir)
    assert builder.name == "local_fashion_mnist"
    assert str(builder.info.version) == "1.0.0"
    assert builder.info.splits["train"].num_examples == 60000
    assert builder.info.splits["test"].num_examples == 10000
    assert builder.info.features["label"].names == datasets.CLASS_NAMES
    assert builder.info.features["image"].shape == (28, 28, 1)
    example = next(iter(load_tfds("train", data_dir=tfds_dir, as_supervised=False)))
    assert set(example) == {"image", "label"}
    assert int(example["label"]) == 9


def test_tfds_builder_missing_files_error(tmp_path):
    from tfmot_zip.data.tfds_builder import LocalFashionMnist

    builder = LocalFashionMnist(data_dir=tmp_path / "tfds", source_dir=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        builder.download_and_prepare()
