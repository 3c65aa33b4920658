"""The installed ``tfmot-zip`` script and ``python -m tfmot_zip.cli``: help with examples, version,
TensorFlow's start-up noise silenced, exit codes that reach the shell."""
import subprocess
import sys

import pytest

from cli_fixtures import NOISE, ROOT, files, script, zipped_file  # noqa: F401  (fixtures)


@pytest.mark.parametrize("command", ["zip", "retrain", "export", "inspect", "demo"])
def test_every_subcommand_help_shows_an_example(command):
    result = script(command, "--help")
    assert result.returncode == 0
    assert "example:" in result.stdout and f"tfmot-zip {command}" in result.stdout.split("example:")[1]


def test_top_level_help_lists_every_subcommand_with_examples():
    result = script("--help")
    assert result.returncode == 0
    for command in ("zip", "retrain", "export", "inspect", "demo"):
        assert f"tfmot-zip {command}" in result.stdout
    assert "exit codes" in result.stdout


def test_version_names_the_stack():
    import tfmot_zip

    result = script("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"tfmot-zip {tfmot_zip.__version__} (tensorflow ") and "python " in result.stdout


def test_script_is_quiet_and_exit_codes_reach_the_shell(zipped_file, tmp_path):
    result = script("inspect", zipped_file)
    assert result.returncode == 0, result.stderr
    assert "total parameters" in result.stdout
    noise = [line for line in result.stderr.splitlines() if any(n in line for n in NOISE)]
    assert noise == [], result.stderr
    result = script("inspect", tmp_path / "missing.keras")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_python_dash_m_runs_the_same_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tfmot_zip.cli", "inspect", str(tmp_path / "missing.tflite")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2 and "tfmot-zip inspect: error:" in result.stderr and "does not exist" in result.stderr


def test_the_cli_imports_tensorflow_only_after_silencing_it():
    """Building the parser imports no TensorFlow (main silences it first, then commands import it)."""
    code = ("import sys; sys.argv = ['tfmot-zip']; from tfmot_zip.cli.parser import build_parser; build_parser(); "
            "print(sorted(m for m in ('tensorflow', 'tf_keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_script_loads_a_zipped_model_with_depthwise_layers_and_keras3_activations(tmp_path):
    """The command registers every zip layer before loading: a zipped MobileNet-like pair (depthwise
    convolutions, a ``tfmot_zip>hard_silu`` activation) is inspected and exported from a file."""
    import numpy as np

    import tfmot_zip
    from tfmot_zip.compat import keras
    from tfmot_zip.model.activations import hard_silu

    def net(seed):
        keras.utils.set_random_seed(seed)
        x = inp = keras.Input((8, 8, 3), name="img")
        x = keras.layers.Conv2D(6, 3, padding="same", activation=hard_silu, name="stem")(x)
        x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
        x = keras.layers.ReLU(6.0, name="relu6")(x)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        return keras.Model(inp, keras.layers.Dense(3, name="head")(x), name=f"mb{seed}")

    rng = np.random.default_rng(0)
    data = [rng.random((40, 8, 8, 3)).astype("float32") for _ in range(2)]
    zipped = tfmot_zip.zip_models(net(1), net(2), calibration_data=data, sharing=0.5, progress=False)
    path = tmp_path / "mobile zipped.keras"
    zipped.save(path)
    result = script("inspect", path)
    assert result.returncode == 0, result.stderr
    assert "dw" in result.stdout and "total parameters" in result.stdout
    result = script("export", path, "--out", tmp_path / "m.tflite", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.tflite").stat().st_size > 0
