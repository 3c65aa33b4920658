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
