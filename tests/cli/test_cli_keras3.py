"""Keras 3 ``.keras`` files on the command line: converted by the model loader, so ``tfmot-zip zip``
gives the same zipped model as with their tf_keras twins; the files are only read."""
import numpy as np
import pytest

from tfmot_zip.cli.files import load_model_file
from tfmot_zip.cli.parser import EXIT_OK, EXIT_USAGE
from tfmot_zip.compat import is_keras3_object, keras

from cli_fixtures import files, run, sha256  # noqa: F401  (files is a fixture)

k3 = pytest.importorskip("keras")
if not k3.__version__.startswith("3."):
    pytest.skip("the keras package is not Keras 3 here", allow_module_level=True)


def keras3_twin(path, out):
    """The Keras 3 model with the architecture and weights of the tf_keras model saved at ``path``."""
    twin = keras.models.load_model(path)
    model3 = k3.Sequential([k3.Input(twin.input_shape[1:]), k3.layers.Flatten(name="flat"),
                            k3.layers.Dense(16, activation="relu", name="fc1"), k3.layers.Dense(8, activation="relu", name="fc2"),
                            k3.layers.Dense(3, activation="softmax", name="head")], name=twin.name)
    model3.set_weights(twin.get_weights())
    model3.save(out)
    return out


def test_keras3_files_zip_like_their_tf_keras_twins(files, tmp_path, capsys):
    paths3 = [keras3_twin(files[f"model{i}"], tmp_path / f"k3_{i}.keras") for i in range(2)]
    hashes = [sha256(p) for p in paths3]
    outs = {}
    for kind, models in (("keras3", paths3), ("tf_keras", [files["model0"], files["model1"]])):
        outs[kind] = tmp_path / f"zipped_{kind}.keras"
        code, captured = run(["zip", *models, "--calibration", files["data0"], files["data1"], "--sharing", "0.5",
                              "--out", outs[kind], "-q"], capsys)
        assert code == EXIT_OK, captured.err
    assert [sha256(p) for p in paths3] == hashes
    zipped3, zipped2 = (keras.models.load_model(outs[k]) for k in ("keras3", "tf_keras"))
    assert [l.name for l in zipped3.layers] == [l.name for l in zipped2.layers]
    for a, b in zip(zipped3.get_weights(), zipped2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_loader_converts_a_keras3_file_and_says_so(files, tmp_path):
    path = keras3_twin(files["model0"], tmp_path / "k3.keras")
    messages = []
    model = load_model_file(path, "model 0", log=messages.append)
    assert not is_keras3_object(model) and model.name == "taska"
    assert messages == [f"converted Keras 3 model 'taska' (model 0 {str(path)!r}) to tf_keras"]


def test_an_unconvertible_keras3_file_is_a_usage_error_naming_the_layer(files, tmp_path, capsys):
    path = tmp_path / "k3_conv1d.keras"
    k3.Sequential([k3.Input((6, 6)), k3.layers.Conv1D(2, 2, name="temporal"), k3.layers.Flatten()]).save(path)
    code, captured = run(["zip", files["model0"], path, "--calibration", files["data0"], "--out", tmp_path / "z.keras",
                          "-q"], capsys)
    assert code == EXIT_USAGE
    assert "saved by Keras 3" in captured.err and "'temporal' (Conv1D)" in captured.err
    assert not (tmp_path / "z.keras").exists()
