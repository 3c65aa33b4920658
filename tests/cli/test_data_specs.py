"""Data specs (:mod:`tfmot_zip.data.specs`): parsing, .npz options, the local Fashion-MNIST builder.

The module is a library module (it raises ValueError); it lives beside the command-line tests
because the command line is its main user.
"""
import numpy as np
import pytest

from tfmot_zip.data.specs import DataSpec, load_data_spec, parse_data_spec


def test_parse_data_spec():
    spec = parse_data_spec("local_fashion_mnist:train[:5000]?classes=0,1,2,3,4")
    assert (spec.source, spec.name, spec.split, spec.classes) == ("tfds", "local_fashion_mnist", "train[:5000]", (0, 1, 2, 3, 4))
    spec = parse_data_spec("mnist:3.0.1:test[10%:20%]?transform=transpose&count=7&scale=none")
    assert (spec.name, spec.split, spec.transform, spec.count, spec.scale) == ("mnist:3.0.1", "test[10%:20%]", "transpose", 7, "none")
    spec = parse_data_spec("some/dir/calib.npz?classes=3,1")
    assert (spec.source, spec.name, spec.classes) == ("npz", "some/dir/calib.npz", (3, 1))
    for bad, pattern in [("", "empty"), ("x:train?count=0", "count"), ("x:train?classes=1,1", "distinct"),
                         ("x:train?scale=255", "scale"), ("x:train?count", "KEY=VALUE"), ("x:train?count=1&count=2", "twice"),
                         (":train", "split is missing"), ("x:", "split is missing"), ("x:train?classes=a", "integer labels"),
                         ("x:train?transform=spin", "transform='spin'"), ("x:train?colour=red", "unknown option 'colour'")]:
        with pytest.raises(ValueError, match=pattern):
            parse_data_spec(bad)


def test_npz_spec_options(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, size=(20, 4, 3, 1)).astype(np.uint8)
    y = np.arange(20) % 5
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    data = load_data_spec(f"{path}?classes=4,2&transform=transpose&count=5", need_labels=True)
    keep = np.isin(y, [4, 2])
    expected_x = np.transpose(x[keep][:5].astype(np.float32) / 255.0, (0, 2, 1, 3))
    np.testing.assert_array_equal(data.x, expected_x)
    np.testing.assert_array_equal(data.y, np.where(y[keep][:5] == 4, 0, 1))
    raw = load_data_spec(f"{path}?scale=none")
    assert raw.x.dtype == np.float32 and raw.x.max() > 1.0
    flipped = load_data_spec(f"{path}?transform=flip_lr")
    np.testing.assert_array_equal(flipped.x, x[:, :, ::-1].astype(np.float32) / 255.0)
    upside_down = load_data_spec(parse_data_spec(f"{path}?transform=flip_ud"))
    np.testing.assert_array_equal(upside_down.x, x[:, ::-1].astype(np.float32) / 255.0)
    first = tmp_path / "first.npz"
    np.savez(first, x[:3])  # no 'x' key: the first array
    assert load_data_spec(str(first)).x.shape == (3, 4, 3, 1)
    np.savez(tmp_path / "bad_labels.npz", x=x, y=y[:5])
    with pytest.raises(ValueError, match="one integer label per example"):
        load_data_spec(str(tmp_path / "bad_labels.npz"))
    np.savez(tmp_path / "float_labels.npz", x=x, y=y + 0.5)
    with pytest.raises(ValueError, match="labels 'y' must be integers"):
        load_data_spec(str(tmp_path / "float_labels.npz"))
    np.savez(tmp_path / "whole_float_labels.npz", x=x, y=y.astype(np.float32))
    assert load_data_spec(str(tmp_path / "whole_float_labels.npz")).y.dtype == np.int64
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(ValueError, match="holds no arrays"):
        load_data_spec(str(tmp_path / "empty.npz"))
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="cannot read"):
        load_data_spec(str(tmp_path / "text.npz"))
    np.savez(tmp_path / "unlabelled.npz", x=x)
    with pytest.raises(ValueError, match="has no labels"):
        load_data_spec(str(tmp_path / "unlabelled.npz"), need_labels=True)
    with pytest.raises(TypeError, match="data spec string or DataSpec"):
        load_data_spec(3)
    assert isinstance(data.spec, DataSpec) and len(data) == 5


def test_local_fashion_mnist_spec_reads_the_local_builder():
    """Prepared once into the user's cache (about a minute on a fresh machine), then instant."""
    from tfmot_zip.data.fashion_mnist import load_fashion_mnist

    data = load_data_spec("local_fashion_mnist:test[:300]?classes=9,0", need_labels=True)
    x, y = load_fashion_mnist("test")
    keep = np.isin(y[:300], [9, 0])
    np.testing.assert_allclose(data.x, x[:300][keep], atol=1e-7)
    np.testing.assert_array_equal(data.y, np.where(y[:300][keep] == 9, 0, 1))
    with pytest.raises(ValueError, match="bad split 'validation'"):
        load_data_spec("local_fashion_mnist:validation")
