"""Data specs (:mod:`tfmot_zip.data.specs`): parsing, .npz options, the local Fashion-MNIST builder.

The module is a library module (it raises ValueError); it lives beside the command-line tests
because the command line is its main user.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tfmot_zip.data.specs import DataSpec, load_data_spec, parse_data_spec


def test_parse_data_spec():
    spec = parse_data_spec("local_fashion_mnist:train[:5000]?classes=0,1,2,3,4")
    assert (spec.source, spec.name, spec.split, spec.classes) == ("tfds", "local_fashion_mnist", "train[:5000]", (0, 1, 2, 3, 4))
    spec = parse_data_spec("mnist:3.0.1:test[10%:20%]?transform=transpose&count=7&scale=none")
    assert (spec.name, spec.split, spec.transform, spec.count, spec.scale) == ("mnist:3.0.1", "test[10%:20%]", "transpose", 7, "none")
    spec = parse_data_spec("some/dir/calib.npz?classes=3,1")
    assert (spec.source, spec.name, spec.classes) == ("npz", "some/dir/calib.npz", (3, 1))
    spec = parse_data_spec("some/dir/Inputs.NPY?count=3")
    assert (spec.source, spec.name, spec.count) == ("npy", "some/dir/Inputs.NPY", 3)
    for bad, pattern in [("", "empty"), ("x:train?count=0", "count"), ("x:train?classes=1,1", "distinct"),
                         ("x:train?scale=255", "scale"), ("x:train?count", "KEY=VALUE"), ("x:train?count=1&count=2", "twice"),
                         (":train", "split is missing"), ("x:", "split is missing"), ("x:train?classes=a", "integer labels"),
                         ("x:train?transform=spin", "transform='spin'"), ("x:train?colour=red", "unknown option 'colour'")]:
        with pytest.raises(ValueError, match=pattern):
            parse_data_spec(bad)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), dtype=st.sampled_from(["uint8", "float32", "float64", "int16"]),
       count=st.one_of(st.none(), st.integers(1, 6)), transform=st.sampled_from(["none", "flip_lr"]))
def test_npy_spec_reads_the_inputs_with_the_options_of_an_npz(tmp_path_factory, shape, dtype, count, transform):
    """A .npy file of inputs loads as the same inputs as a .npz holding them as 'x' (options applied alike)."""
    if transform != "none" and len(shape) != 4:
        transform = "none"  # spatial transforms need images (N, H, W, C)
    folder = tmp_path_factory.mktemp("npy")
    x = (np.random.default_rng(len(shape)).random(shape) * 200).astype(dtype)
    np.save(folder / "inputs.npy", x)
    np.savez(folder / "inputs.npz", x=x)
    options = "&".join(o for o in (f"count={count}" if count else "", f"transform={transform}") if o)
    from_npy = load_data_spec(f"{folder / 'inputs.npy'}?{options}")
    from_npz = load_data_spec(f"{folder / 'inputs.npz'}?{options}")
    assert from_npy.spec.source == "npy" and from_npy.y is None
    np.testing.assert_array_equal(from_npy.x, from_npz.x)
    assert len(from_npy) == min(count or shape[0], shape[0])


def test_npy_spec_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"file '.*missing\.npy' does not exist\. Pass an existing \.npy file"):
        load_data_spec(str(tmp_path / "missing.npy"))
    np.save(tmp_path / "objects.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cannot read .*objects\.npy' as a \.npy file of numbers.*np\.save\(path, inputs\)"):
        load_data_spec(str(tmp_path / "objects.npy"))
    np.save(tmp_path / "x.npy", np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"classes= needs labels.*np\.savez\(path, x=inputs, y=labels\)"):
        load_data_spec(f"{tmp_path / 'x.npy'}?classes=0")
    with pytest.raises(ValueError, match="has no labels, which training and evaluation need"):
        load_data_spec(str(tmp_path / "x.npy"), need_labels=True)


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
