"""Command-line inputs checked before any work: ``--sharing`` syntax, specs per model, output paths."""
import numpy as np
import pytest

from tfmot_zip.cli.errors import UsageError
from tfmot_zip.cli.files import check_output_file, npz_files
from tfmot_zip.cli.inputs import check_inputs_fit, parse_sharing, per_model_specs
from tfmot_zip.data.specs import parse_data_spec


def test_parse_sharing_checks_the_syntax_and_leaves_values_to_zip_models():
    assert parse_sharing("1") == 1.0 and parse_sharing(" 0.25 ") == 0.25
    assert parse_sharing("fc1=1.0, fc2=0") == {"fc1": 1.0, "fc2": 0.0}
    assert parse_sharing("1.5") == 1.5 and parse_sharing("fc1=2") == {"fc1": 2.0}  # zip_models rejects them (exit 2)
    for bad, pattern in [("half", "'half'"), ("fc1=0.5,fc1=0.5", "twice"), ("=0.5", "LAYER=FRACTION"),
                         ("fc1=0.5,fc2", "LAYER=FRACTION"), ("fc1=most", "'most'")]:
        with pytest.raises(UsageError, match=pattern):
            parse_sharing(bad)


def test_per_model_specs_repeat_one_spec_or_need_one_each():
    assert [s.text for s in per_model_specs(["a.npz", "b.npz"], 2, "--eval", "models")] == ["a.npz", "b.npz"]
    assert [s.text for s in per_model_specs(["a.npz"], 3, "--eval", "tasks")] == ["a.npz"] * 3
    with pytest.raises(UsageError, match="2 specs for 3 tasks; pass one spec per task"):
        per_model_specs(["a.npz", "b.npz"], 3, "--data", "tasks")
    with pytest.raises(ValueError, match="unknown option"):
        per_model_specs(["a.npz?colour=red"], 1, "--data", "tasks")


def test_outputs_never_overwrite_an_input_npz(tmp_path):
    data = tmp_path / "calib.npz"
    specs = [parse_data_spec(f"{data}?count=5"), parse_data_spec("mnist:train"), parse_data_spec(f"{tmp_path / 'x.npy'}")]
    assert npz_files(specs) == [data, tmp_path / "x.npy"]
    with pytest.raises(UsageError, match="is also an input"):
        check_output_file(tmp_path / "x.npy", (".npy",), "--out", inputs=npz_files(specs))
    with pytest.raises(UsageError, match="is also an input"):
        check_output_file(tmp_path / "calib.npz", (".npz",), "--out", inputs=npz_files(specs))
    assert check_output_file(tmp_path / "out.keras", (".keras",), "--out", inputs=npz_files(specs)) == tmp_path / "out.keras"


def test_help_texts_name_the_local_fashion_mnist_spec():
    from tfmot_zip.cli.inputs import FASHION_MNIST
    from tfmot_zip.data.specs import LOCAL_FASHION_MNIST

    assert FASHION_MNIST == LOCAL_FASHION_MNIST


def test_check_inputs_fit_counts_nan_and_inf_as_the_library_does():
    from tfmot_zip.compat import keras
    from tfmot_zip.data.checks import require_finite
    from tfmot_zip.data.specs import LoadedData

    model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    x = np.zeros((4, 3), np.float32)
    x[0, 0], x[1, 2] = np.nan, np.inf
    with pytest.raises(ValueError) as library:
        require_finite(x, "--data 'd.npz'")
    with pytest.raises(UsageError, match=r"^--data 'd\.npz' contains NaN or inf values: 1 NaN and 1 inf out of 12 values") as cli:
        check_inputs_fit(model, [LoadedData(parse_data_spec("d.npz"), x)], "--data")
    assert str(cli.value) == str(library.value)
    check_inputs_fit(model, [LoadedData(parse_data_spec("d.npz"), np.nan_to_num(x))], "--data")  # clean: accepted
