"""Files on the command line: model paths and loading, output paths checked before any work.

Input files are only read; outputs are written atomically by :func:`tfmot_zip.io.atomic_save_model`.
Every problem raises :class:`~tfmot_zip.cli.errors.UsageError` naming the flag and the fix.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from tfmot_zip.cli.errors import UsageError

if TYPE_CHECKING:  # tfmot_zip.data imports TensorFlow, which main() silences first
    from tfmot_zip.data.specs import DataSpec

__all__ = [
    "MODEL_SUFFIXES", "check_model_path", "load_model_file", "check_output_file", "check_output_dir",
    "file_size", "npz_files",
]

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def check_model_path(text: str | os.PathLike, what: str) -> Path:
    """An existing ``.keras``/``.h5`` file or SavedModel folder, as a path.

    Example:
        >>> check_model_path("missing.keras", "model 0")
        Traceback (most recent call last):
        ...
        tfmot_zip.cli.errors.UsageError: model 0 'missing.keras' does not exist. Pass a .keras file or a SavedModel folder.
    """
    path = Path(text).expanduser()
    if not path.exists():
        raise UsageError(f"{what} {str(text)!r} does not exist. Pass a .keras file or a SavedModel folder.")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise UsageError(
                f"{what} {str(text)!r} is a folder without saved_model.pb, so not a SavedModel. "
                "Pass a .keras file or a SavedModel folder."
            )
    elif path.suffix.lower() not in MODEL_SUFFIXES:
        raise UsageError(
            f"{what} {str(text)!r} has suffix {path.suffix or '(none)'!r}; expected a .keras (or .h5) file or a "
            "SavedModel folder."
        )
    return path


def load_model_file(path: str | os.PathLike, what: str = "model", log: Callable[[str], None] | None = None) -> Any:
    """Loads a tf_keras model (``.keras``, ``.h5`` or SavedModel folder) without compiling it.

    Zip layers are registered, so zipped models load too. A ``.keras`` file saved by Keras 3 is
    converted to tf_keras (:func:`tfmot_zip.model.keras3.from_keras3`), and ``log`` (e.g.
    ``console.log``) is told so. The file is only read.

    Raises:
        UsageError: a missing or unreadable file, or a Keras 3 file that cannot be converted (with why).
        TypeError: the file holds something that is not a tf_keras model.

    Example:
        >>> import tempfile
        >>> from tfmot_zip.compat import keras
        >>> path = Path(tempfile.mkdtemp()) / "m.keras"
        >>> keras.Sequential([keras.layers.Dense(2, input_shape=(3,))], name="m").save(path)
        >>> load_model_file(path).name
        'm'
    """
    path = check_model_path(path, what)
    from tfmot_zip.compat import check_tf_keras_model, keras
    from tfmot_zip.model import register_serializables

    register_serializables()  # every zip layer and activation a zipped file may name

    from tfmot_zip.model.keras3 import from_keras3, keras3_file_version

    keras3 = keras3_file_version(path)
    if keras3 is not None:
        try:
            model = from_keras3(path)
        except (ValueError, OSError, KeyError) as err:  # UnsupportedModelError is a ValueError
            raise UsageError(f"{what} {str(path)!r} was saved by Keras {keras3} (Keras 3) and cannot be converted to "
                             f"tf_keras: {err}") from None
        if log is not None:
            log(f"converted Keras 3 model {model.name!r} ({what} {str(path)!r}) to tf_keras")
        return model
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise UsageError(
            f"Cannot load {what} {str(path)!r} as a tf_keras model ({type(err).__name__}: {first}). "
            "Pass a model saved with tf_keras model.save(...)."
        ) from None
    return check_tf_keras_model(model, f"{what} {str(path)!r}")


def check_output_file(text: str | os.PathLike, suffixes: Sequence[str], flag: str, inputs: Iterable[Path] = ()) -> Path:
    """Validates an output file path before any work: suffix, writable folder, not an input.

    Example:
        >>> check_output_file("model.h5", (".keras",), "--out")
        Traceback (most recent call last):
        ...
        tfmot_zip.cli.errors.UsageError: --out 'model.h5' must end in .keras; e.g. --out zipped.keras.
    """
    from tfmot_zip.io import check_writable_dir

    path = Path(text).expanduser()
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {str(text)!r} must end in {' or '.join(suffixes)}; e.g. {flag} zipped{suffixes[0]}.")
    if path.is_dir():
        raise UsageError(f"{flag} {str(text)!r} is a folder; pass a file path such as {path / ('out' + suffixes[0])}.")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{flag} {str(text)!r}: {str(parent)!r} is a file, not a folder. Choose a writable path.")
    try:
        check_writable_dir(parent)
    except OSError as err:
        raise UsageError(f"{flag} {str(text)!r}: {err}") from None
    resolved = path.resolve()
    for source in inputs:
        if source.resolve() == resolved:
            raise UsageError(f"{flag} {str(text)!r} is also an input; input files are never overwritten. Choose another path.")
    return path


def check_output_dir(text: str | os.PathLike, flag: str) -> Path:
    """Creates an output folder if needed; a clear error when it is a file or not writable.

    Example:
        >>> import tempfile
        >>> check_output_dir(Path(tempfile.mkdtemp()) / "report", "--report").is_dir()
        True
    """
    from tfmot_zip.io import check_writable_dir

    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {str(text)!r} is a file; pass a folder.")
    if path.parent.exists() and not path.parent.is_dir():
        raise UsageError(f"{flag} {str(text)!r}: {str(path.parent)!r} is a file, not a folder. Choose a writable path.")
    try:
        return check_writable_dir(path)
    except OSError as err:
        raise UsageError(f"{flag} {str(text)!r}: {err}") from None


def file_size(path: Path) -> int:
    """Bytes of a file, or of every file in a folder (a SavedModel).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.bin").write_bytes(b"abc")
        >>> file_size(folder), file_size(folder / "a.bin")
        (3, 3)
    """
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def npz_files(specs: Iterable[DataSpec]) -> list[Path]:
    """The ``.npz`` and ``.npy`` files that data specs read (outputs must not overwrite them).

    Example:
        >>> from tfmot_zip.data.specs import parse_data_spec
        >>> npz_files([parse_data_spec("a.npz?count=5"), parse_data_spec("mnist:train")])
        [PosixPath('a.npz')]
    """
    return [Path(s.name).expanduser() for s in specs if s.source in ("npz", "npy")]
