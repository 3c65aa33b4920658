"""The ``tfmot-zip`` command: zip, retrain, export, inspect and demo, in the TFMOT order.

``zip`` merges pre-trained models into one multi-task model, ``retrain`` trains it jointly for a
few hundred steps, ``export`` strips the zipping and writes one TFLite file with a signature per
task, ``inspect`` describes a zipped ``.keras`` or a ``.tflite`` file, ``demo`` runs the main job.

Data on the command line is a *spec*: a tensorflow-datasets name with a split
(``local_fashion_mnist:train[:5000]``) or a ``.npz`` file (``calib.npz``), with optional
options after ``?`` (``local_fashion_mnist:train?classes=0,1,2,3,4&count=2000``). See
:func:`parse_data_spec`.

Exit codes: 0 success, 2 a user error (bad arguments, files or inputs; the message says what
and how to fix it), 1 an unexpected failure (rerun with ``--debug`` for the traceback).
TensorFlow's start-up noise is silenced here, not in the library.

Everything except :func:`main` is a plain function that tests and notebooks can import.

Example:
    >>> from tfmot_zip.cli.main import main
    >>> main(["zip", "a.keras", "b.keras", "--calibration", "a.npz", "b.npz",
    ...       "--sharing", "0.5", "--out", "zipped.keras"])  # doctest: +SKIP
    0
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import inspect
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "UsageError",
    "DataSpec",
    "LoadedData",
    "parse_data_spec",
    "load_data_spec",
    "parse_sharing",
    "load_model_file",
    "atomic_save_model",
    "inspect_path",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PACKAGE_DIR = Path(__file__).resolve().parent
LOCAL_FASHION_MNIST = "local_fashion_mnist"
SPEC_OPTIONS = ("classes", "transform", "count", "scale")
TRANSFORMS = ("none", "transpose", "flip_lr", "flip_ud")
QUANTIZE_CHOICES = ("none", "dynamic", "float16", "int8")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


class UsageError(ValueError):
    """A bad command-line argument or input file; the message says what is wrong and the fix."""


# ------------------------------------------------------------------------------------------
# Progress and quiet TensorFlow
# ------------------------------------------------------------------------------------------


@dataclass
class _Console:
    """Where messages and progress bars go (stderr), and whether to show them."""

    quiet: bool = False

    def log(self, message: str) -> None:
        if not self.quiet:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    def bar(self, **kwargs: Any):
        from tqdm import tqdm

        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("leave", False)
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(disable=self.quiet, **kwargs)


@contextlib.contextmanager
def _quiet_tensorflow(enabled: bool) -> Iterator[None]:
    """Silences TensorFlow's C++ start-up logs, Python warnings and absl/TF loggers (restored after)."""
    if not enabled:
        yield
        return
    previous_env = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # effective when TensorFlow is imported below
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl", "h5py", "matplotlib")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    absl_level = None
    try:
        import absl.logging

        absl_level = absl.logging.get_verbosity()
        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TensorFlow
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if absl_level is not None:
            import absl.logging

            absl.logging.set_verbosity(absl_level)
        if previous_env is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = previous_env


@contextlib.contextmanager
def _native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Sends C++ logs (file descriptor 2) to /dev/null while Python's ``sys.stderr`` still prints.

    TensorFlow 2.21 and LiteRT log from C++ straight to descriptor 2 (oneDNN, CUDA and CPU
    feature banners, the XNNPACK delegate line), some before ``TF_CPP_MIN_LOG_LEVEL`` is read.
    Python's own writes (progress bars, messages, errors) go to a duplicate of the real stderr.
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        fd = sys.stderr.fileno()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real stderr
        yield
        return
    python_stderr = sys.stderr
    replacement = open(os.dup(saved), "w", buffering=1, encoding=getattr(python_stderr, "encoding", None) or "utf-8",
                       errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        sys.stderr = replacement
        yield
    finally:
        with contextlib.suppress(Exception):
            replacement.flush()
        sys.stderr = python_stderr
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
        with contextlib.suppress(Exception):
            replacement.close()


# ------------------------------------------------------------------------------------------
# Data specs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec (see :func:`parse_data_spec`).

    Attributes:
        text: the spec as written.
        source: "tfds" or "npz".
        name: the tensorflow-datasets name (tfds) or the file path (npz).
        split: the tfds split expression (e.g. ``train[:5000]``); None for npz.
        classes: keep only these labels, remapped to ``0..len(classes)-1`` in the order given.
        transform: "none", "transpose" (swap height and width), "flip_lr" or "flip_ud".
        count: keep at most this many examples (after the class filter).
        scale: "auto" (uint8 images become float32 in [0, 1], as the zoo models expect) or
            "none" (values kept, cast to float32).
    """

    text: str
    source: str
    name: str
    split: str | None = None
    classes: tuple[int, ...] | None = None
    transform: str = "none"
    count: int | None = None
    scale: str = "auto"


@dataclass
class LoadedData:
    """Inputs (float32) and labels (int64 or None) read from a :class:`DataSpec`."""

    spec: DataSpec
    x: np.ndarray
    y: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.x)


def _spec_error(text: str, problem: str) -> UsageError:
    return UsageError(
        f"Bad data spec {text!r}: {problem}. A spec is NAME:SPLIT for tensorflow-datasets "
        f"(e.g. {LOCAL_FASHION_MNIST}:train[:5000]) or a .npz file (key 'x', optional 'y'), "
        "optionally followed by ?classes=0,1,2&transform=transpose&count=1000&scale=none."
    )


def parse_data_spec(text: str) -> DataSpec:
    """Parses a data spec of the command line.

    Grammar: ``SOURCE[?OPTION=VALUE[&OPTION=VALUE...]]``. ``SOURCE`` is a ``.npz`` file path
    or ``NAME:SPLIT`` (a tensorflow-datasets name and split expression; the last ``:``
    separates them, so ``NAME:VERSION:SPLIT`` works too). Options:

    - ``classes=0,1,2``: keep these labels only, remapped to ``0, 1, 2`` in the order given
      (applied after the split slice: ``train[:5000]?classes=0,1,2,3,4`` keeps about 2,500);
    - ``transform=transpose|flip_lr|flip_ud|none``: a spatial transform of every image;
    - ``count=N``: at most ``N`` examples (the first ones, after the class filter);
    - ``scale=auto|none``: ``auto`` (default) turns uint8 images into float32 in [0, 1].

    Raises:
        UsageError: an empty spec, a missing split, an unknown option or a bad value.

    Example:
        >>> spec = parse_data_spec("local_fashion_mnist:train[:5000]?classes=0,1,2,3,4")
        >>> spec.name, spec.split, spec.classes
        ('local_fashion_mnist', 'train[:5000]', (0, 1, 2, 3, 4))
        >>> parse_data_spec("calib.npz?count=100").source
        'npz'
    """
    if not isinstance(text, str) or not text.strip():
        raise _spec_error(str(text), "it is empty")
    text = text.strip()
    source, _, query = text.partition("?")
    options: dict[str, str] = {}
    if query:
        for item in query.split("&"):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise _spec_error(text, f"option {item!r} is not KEY=VALUE")
            if key not in SPEC_OPTIONS:
                raise _spec_error(text, f"unknown option {key!r} (known: {', '.join(SPEC_OPTIONS)})")
            if key in options:
                raise _spec_error(text, f"option {key!r} is given twice")
            options[key] = value.strip()
    classes = None
    if "classes" in options:
        try:
            classes = tuple(int(c) for c in options["classes"].split(",") if c.strip() != "")
        except ValueError:
            raise _spec_error(text, f"classes={options['classes']!r} is not a comma-separated list of integer labels") from None
        if not classes or min(classes) < 0 or len(set(classes)) != len(classes):
            raise _spec_error(text, f"classes={options['classes']!r} must list distinct non-negative labels")
    transform = options.get("transform", "none")
    if transform not in TRANSFORMS:
        raise _spec_error(text, f"transform={transform!r} is unknown (known: {', '.join(TRANSFORMS)})")
    count = None
    if "count" in options:
        try:
            count = int(options["count"])
        except ValueError:
            count = 0
        if count <= 0:
            raise _spec_error(text, f"count={options['count']!r} must be a positive integer")
    scale = options.get("scale", "auto")
    if scale not in ("auto", "none"):
        raise _spec_error(text, f"scale={scale!r} must be 'auto' or 'none'")
    common = dict(classes=classes, transform=transform, count=count, scale=scale)
    if source.lower().endswith(".npz"):
        return DataSpec(text, "npz", source, None, **common)
    depth, cut = 0, -1
    for position, char in enumerate(source):  # the last ':' outside a slice such as train[:5000]
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == ":" and depth == 0:
            cut = position
    name, split = (source[:cut], source[cut + 1:]) if cut >= 0 else (source, "")
    if not name or not split:
        raise _spec_error(text, "it is neither a .npz file nor NAME:SPLIT (the split is missing)")
    return DataSpec(text, "tfds", name, split, **common)


def _default_tfds_dir() -> Path:
    from tfmot_zip.data.fashion_mnist import default_cache_dir

    return default_cache_dir() / "tensorflow_datasets"


def _tfds_builder(spec: DataSpec, data_dir: str | os.PathLike | None, console: _Console):
    """A prepared tensorflow-datasets builder for ``spec`` (never downloads)."""
    if spec.name == LOCAL_FASHION_MNIST:
        from tfmot_zip.data.tfds_builder import LocalFashionMnist

        folder = Path(data_dir) if data_dir is not None else _default_tfds_dir()
        builder = LocalFashionMnist(data_dir=os.fspath(folder))
        if not builder.is_prepared():
            console.log(f"preparing {LOCAL_FASHION_MNIST} from the local Debian files into {folder} (once, about a minute)")
            builder.download_and_prepare()
        return builder
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(spec.name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except Exception as err:  # tfds raises DatasetNotFoundError (with the whole catalogue) and others
        raise UsageError(
            f"Data spec {spec.text!r}: tensorflow-datasets has no dataset {spec.name!r} "
            f"({type(err).__name__}). Use {LOCAL_FASHION_MNIST} (Fashion-MNIST from the local Debian "
            "package), a dataset already prepared locally, or a .npz file."
        ) from None
    if not builder.is_prepared():
        raise UsageError(
            f"Data spec {spec.text!r}: dataset {spec.name!r} is not prepared under {builder.data_dir!r}, "
            "and tfmot-zip never downloads. Prepare it once where you have a network "
            f"(tfds.builder({spec.name!r}).download_and_prepare()) and pass --tfds-data-dir, use "
            f"{LOCAL_FASHION_MNIST}, or export the arrays to a .npz file (keys 'x' and 'y')."
        )
    return builder


def _load_tfds(spec: DataSpec, data_dir, console: _Console) -> tuple[np.ndarray, np.ndarray]:
    builder = _tfds_builder(spec, data_dir, console)
    if not builder.info.supervised_keys:
        raise UsageError(
            f"Data spec {spec.text!r}: dataset {spec.name!r} has no supervised (input, label) keys; "
            "export its inputs and labels to a .npz file (keys 'x' and 'y') instead."
        )
    try:
        total = int(builder.info.splits[spec.split].num_examples)
        dataset = builder.as_dataset(split=spec.split, as_supervised=True, shuffle_files=False)
    except Exception as err:  # bad split expressions raise several exception types in tfds
        known = ", ".join(sorted(builder.info.splits.keys()))
        raise UsageError(
            f"Data spec {spec.text!r}: bad split {spec.split!r} for {spec.name!r} ({str(err).splitlines()[0][:200]}). "
            f"Known splits: {known}; slices look like train[:5000] or test[10%:]."
        ) from None
    xs, ys = [], []
    import tensorflow_datasets as tfds

    with console.bar(total=total, desc=f"reading {spec.name}:{spec.split}", unit="ex") as bar:
        for x, y in tfds.as_numpy(dataset.batch(1024)):
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
            bar.update(len(x))
    if not xs:
        raise UsageError(f"Data spec {spec.text!r}: split {spec.split!r} of {spec.name!r} is empty; choose a non-empty slice.")
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _load_npz(spec: DataSpec) -> tuple[np.ndarray, np.ndarray | None]:
    path = Path(spec.name).expanduser()
    if not path.is_file():
        raise UsageError(f"Data spec {spec.text!r}: file {str(path)!r} does not exist. Pass an existing .npz file.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if not keys:
                raise UsageError(f"Data spec {spec.text!r}: {str(path)!r} holds no arrays; save one with np.savez(path, x=inputs, y=labels).")
            x = np.asarray(archive["x"] if "x" in keys else archive[keys[0]])
            y = np.asarray(archive["y"]) if "y" in keys else None
    except UsageError:
        raise
    except Exception as err:  # zipfile/pickle/format errors
        raise UsageError(
            f"Data spec {spec.text!r}: cannot read {str(path)!r} as a .npz file ({type(err).__name__}: "
            f"{str(err)[:160]}). Save it with np.savez(path, x=inputs, y=labels)."
        ) from None
    if x.ndim == 0:
        raise UsageError(f"Data spec {spec.text!r}: the inputs are a scalar; save an array with examples along the first axis.")
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise UsageError(
                f"Data spec {spec.text!r}: labels 'y' have shape {y.shape} but inputs 'x' have {len(x)} examples; "
                "save one integer label per example (shape (N,))."
            )
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise UsageError(f"Data spec {spec.text!r}: labels 'y' must be integers; received dtype {y.dtype}.")
        y = y.astype(np.int64)
    return x, y


def _apply_options(spec: DataSpec, x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    if spec.classes is not None:
        if y is None:
            raise UsageError(f"Data spec {spec.text!r}: classes= needs labels, but the data has none (add 'y' to the .npz).")
        keep = np.isin(y, spec.classes)
        if not keep.any():
            present = np.unique(y).tolist()
            raise UsageError(
                f"Data spec {spec.text!r}: no example has a label in classes={list(spec.classes)}; the data has "
                f"labels {present[:20]}{' ...' if len(present) > 20 else ''}. Choose classes among them."
            )
        lookup = np.full(int(max(max(spec.classes), y.max())) + 1, -1, dtype=np.int64)
        lookup[list(spec.classes)] = np.arange(len(spec.classes))
        x, y = x[keep], lookup[y[keep]]
    if spec.count is not None:
        x = x[: spec.count]
        y = None if y is None else y[: spec.count]
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UsageError(f"Data spec {spec.text!r}: inputs have dtype {x.dtype}; numeric inputs are needed.")
    if spec.scale == "auto" and x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    else:
        x = x.astype(np.float32, copy=False)
    if spec.transform != "none":
        if x.ndim != 4:
            raise UsageError(
                f"Data spec {spec.text!r}: transform={spec.transform} needs images (N, H, W, C); the inputs have shape {x.shape}."
            )
        axis = {"transpose": None, "flip_lr": 2, "flip_ud": 1}[spec.transform]
        x = np.transpose(x, (0, 2, 1, 3)) if axis is None else np.flip(x, axis=axis)
        x = np.ascontiguousarray(x)
    if len(x) == 0:
        raise UsageError(f"Data spec {spec.text!r} selects no examples; choose a non-empty slice.")
    return x, y


def load_data_spec(
    spec: DataSpec | str,
    *,
    need_labels: bool = False,
    tfds_data_dir: str | os.PathLike | None = None,
    quiet: bool = True,
) -> LoadedData:
    """Reads the examples a data spec names, as float32 inputs and int64 labels.

    ``local_fashion_mnist`` is read through the project's own tensorflow-datasets builder
    (:class:`tfmot_zip.data.tfds_builder.LocalFashionMnist`, prepared once from the Debian files into
    ``<cache>/tensorflow_datasets`` or ``tfds_data_dir``); another tfds name only when it is
    already prepared locally; nothing is ever downloaded.

    Args:
        spec: a :class:`DataSpec` or its text (see :func:`parse_data_spec`).
        need_labels: raise when the data has no labels (retraining, evaluation).
        tfds_data_dir: tensorflow-datasets data folder (default: tfds' own for catalogue
            names, ``<cache>/tensorflow_datasets`` for ``local_fashion_mnist``).
        quiet: hide the progress bar.

    Returns:
        A :class:`LoadedData`.

    Raises:
        UsageError: a missing file, an unknown or unprepared dataset, a bad split, missing or
            malformed labels, or a selection with no example.

    Example:
        >>> data = load_data_spec("local_fashion_mnist:test[:100]?classes=0,1", need_labels=True)  # doctest: +SKIP
        >>> data.x.shape, sorted(set(data.y))  # doctest: +SKIP
        ((20, 28, 28, 1), [0, 1])
    """
    if isinstance(spec, str):
        spec = parse_data_spec(spec)
    if not isinstance(spec, DataSpec):
        raise TypeError(f"Expected a data spec string or DataSpec. Received: spec={spec!r}")
    console = _Console(quiet=quiet)
    if spec.source == "npz":
        x, y = _load_npz(spec)
    else:
        x, y = _load_tfds(spec, tfds_data_dir, console)
    x, y = _apply_options(spec, x, y)
    if need_labels and y is None:
        raise UsageError(
            f"Data spec {spec.text!r} has no labels, which training and evaluation need: use a "
            "supervised tensorflow-datasets split or a .npz file with 'x' and 'y'."
        )
    return LoadedData(spec, x, y)


# ------------------------------------------------------------------------------------------
# Models and outputs
# ------------------------------------------------------------------------------------------


def parse_sharing(text: str) -> float | dict[str, float]:
    """Parses ``--sharing``: one fraction (``0.5``) or per layer (``fc1=1.0,fc2=0.5``).

    Raises:
        UsageError: not a number in [0, 1], or a malformed ``name=fraction`` list.

    Example:
        >>> parse_sharing("0.5")
        0.5
        >>> parse_sharing("fc1=1.0,fc2=0.25")
        {'fc1': 1.0, 'fc2': 0.25}
    """

    def fraction(value: str, where: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not (0.0 <= number <= 1.0):
            raise UsageError(
                f"Expected sharing between 0 and 1 (1.0 shares every unit of a layer). Received: {where}={value!r}. "
                "Pass e.g. --sharing 0.5 or --sharing fc1=1.0,fc2=0.5."
            )
        return number

    text = str(text).strip()
    if "=" not in text:
        return fraction(text, "--sharing")
    result: dict[str, float] = {}
    for item in text.split(","):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name:
            raise UsageError(f"Bad --sharing item {item!r}; expected LAYER=FRACTION, e.g. --sharing fc1=1.0,fc2=0.5.")
        if name in result:
            raise UsageError(f"--sharing names layer {name!r} twice; give each layer once.")
        result[name] = fraction(value.strip(), f"--sharing {name}")
    return result


def _check_model_path(text: str | os.PathLike, what: str) -> Path:
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


def _keras3_version(path: Path) -> str | None:
    """The Keras version a ``.keras`` archive was saved with, when it is Keras 3."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
    except (KeyError, ValueError, OSError):
        return None
    version = str(meta.get("keras_version", ""))
    return version if version.startswith("3.") else None


def load_model_file(path: str | os.PathLike, what: str = "model") -> "Any":
    """Loads a tf_keras model (``.keras``, ``.h5`` or SavedModel folder) without compiling it.

    Zip layers are registered, so zipped models load too. The file is only read.

    Raises:
        UsageError: a missing or unreadable file, or a Keras 3 file (with how to convert it).
        TypeError: the file holds something that is not a tf_keras model.

    Example:
        >>> model = load_model_file("zipped.keras")  # doctest: +SKIP
    """
    path = _check_model_path(path, what)
    from tfmot_zip.model import layers# noqa: F401  (registers ZipDense/ZipConv2D for loading)
    from tfmot_zip.compat import check_tf_keras_model, keras

    keras3 = _keras3_version(path)
    if keras3 is not None:
        raise UsageError(
            f"{what} {str(path)!r} was saved by Keras {keras3} (Keras 3); tfmot_zip and TFMOT need tf_keras "
            "(Keras 2) models. Rebuild the model with `import tf_keras as keras` (or set TF_USE_LEGACY_KERAS=1 "
            "before importing TensorFlow), load its weights, and save it again."
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise UsageError(
            f"Cannot load {what} {str(path)!r} as a tf_keras model ({type(err).__name__}: {first}). "
            "Pass a model saved with tf_keras model.save(...)."
        ) from None
    return check_tf_keras_model(model, f"{what} {str(path)!r}")


def _check_output_file(text: str | os.PathLike, suffixes: Sequence[str], flag: str, inputs: Sequence[Path] = ()) -> Path:
    """Validates an output file path before any work: suffix, writable folder, not an input."""
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


def _check_output_dir(text: str | os.PathLike, flag: str) -> Path:
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


def atomic_save_model(model: Any, path: str | os.PathLike, **save_kwargs: Any) -> Path:
    """Saves a tf_keras model to ``path`` atomically (a temporary file in the folder, then a rename).

    A failure leaves the previous file (or nothing) in place, never a partial file.
    ``save_kwargs`` go to ``model.save`` (e.g. ``include_optimizer=False``).

    Example:
        >>> atomic_save_model(zipped, "out/zipped.keras")  # doctest: +SKIP
        PosixPath('out/zipped.keras')
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {str(folder)!r} of output file {str(target)!r} does not exist; create it first.")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=folder)
    os.close(fd)
    try:
        model.save(tmp, overwrite=True, **save_kwargs)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def _zip_layers(model: Any) -> list:
    from tfmot_zip.model.layers import ZIP_LAYERS

    return [layer for layer in model.layers if isinstance(layer, ZIP_LAYERS)]


def _per_model_specs(specs: Sequence[str], count: int, flag: str, what: str) -> list[DataSpec]:
    parsed = [parse_data_spec(s) for s in specs]
    if len(parsed) == 1 and count > 1:
        return parsed * count
    if len(parsed) != count:
        raise UsageError(
            f"{flag} got {len(parsed)} specs for {count} {what}; pass one spec per {what[:-1]} (in the same order), "
            "or a single spec for all."
        )
    return parsed


def _load_specs(specs: Sequence[DataSpec], args, need_labels: bool, console: _Console) -> list[LoadedData]:
    cache: dict[str, LoadedData] = {}
    out = []
    for spec in specs:
        if spec.text not in cache:
            cache[spec.text] = load_data_spec(spec, need_labels=need_labels, tfds_data_dir=args.tfds_data_dir, quiet=console.quiet)
        out.append(cache[spec.text])
    return out


def _check_inputs_fit(model: Any, data: Sequence[LoadedData], flag: str, input_index: Sequence[int] | None = None) -> None:
    """Data shapes against the model's inputs, finite values (before any work)."""
    shapes = [tuple(s[1:]) for s in (model.input_shape if isinstance(model.input_shape, list) else [model.input_shape])]
    for i, d in enumerate(data):
        shape = shapes[input_index[i] if input_index is not None else min(i, len(shapes) - 1)]
        if tuple(d.x.shape[1:]) != shape:
            raise UsageError(
                f"{flag} {d.spec.text!r} has samples of shape {tuple(d.x.shape[1:])}, but the model input is {shape}. "
                "Pass data of the model's input shape (use ?transform=... or another dataset)."
            )
        if not np.all(np.isfinite(d.x)):
            raise UsageError(f"{flag} {d.spec.text!r} contains NaN or inf values; clean the data first.")


def _check_labels_fit(model: Any, data: Sequence[LoadedData], flag: str) -> None:
    units = [int(s[-1]) for s in (model.output_shape if isinstance(model.output_shape, list) else [model.output_shape])]
    for t, d in enumerate(data):
        assert d.y is not None
        low, high = int(d.y.min()), int(d.y.max())
        if low < 0 or high >= units[t]:
            raise UsageError(
                f"{flag} {d.spec.text!r} has labels {low}..{high}, but task {t} ({model.output_names[t]!r}) has "
                f"{units[t]} classes (labels 0..{units[t] - 1}). Select and remap its classes, e.g. "
                f"?classes={','.join(str(c) for c in range(units[t]))}."
            )


def _accuracy_of(model: Any, tests: Sequence[LoadedData], console: _Console, desc: str) -> list[float]:
    from tfmot_zip.training import evaluate_tasks

    console.log(f"evaluating {desc}")
    return [round(a, 2) for a in evaluate_tasks(model, [(d.x, d.y) for d in tests])]


# ------------------------------------------------------------------------------------------
# Subcommands
# ------------------------------------------------------------------------------------------


def _zip_with_progress(models, calibration, console: _Console, **kwargs):
    """``zip_models`` with a per-layer progress bar."""
    import tfmot_zip
    from tfmot_zip.model.graph import align_models

    total = len(align_models(models).hidden_zip_nodes()) * (len(models) - 1)  # one pass per added model
    parameters = inspect.signature(tfmot_zip.zip_models).parameters
    with console.bar(total=total, desc="zipping", unit="layer") as bar:
        started: list[str] = []

        def advance(name: str) -> None:
            """Called when a layer starts: the previous one is done."""
            if started:
                bar.update(1)
            started.append(str(name))
            bar.set_postfix_str(started[-1])

        if "progress" in parameters:  # a progress callback, when the API offers one
            zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, progress=advance, **kwargs)
        else:

            class _Lines(io.TextIOBase):
                """Reads zip_models' verbose lines ("zipping <layer>" when a layer starts)."""

                def write(self, text: str) -> int:
                    for line in text.splitlines():
                        if line.startswith("zipping "):
                            advance(line[len("zipping "):])
                    return len(text)

            with contextlib.redirect_stdout(_Lines()):
                zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, verbose=True, **kwargs)
        bar.update(max(0, total - bar.n))
        return zipped


def _file_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _cmd_zip(args, console: _Console) -> int:
    # Everything checkable without loading is checked first.
    paths = [_check_model_path(p, f"model {i}") for i, p in enumerate(args.models)]
    if len(paths) < 2:
        raise UsageError(f"zip needs at least two models; received {len(paths)}: {[str(p) for p in paths]}.")
    sharing = parse_sharing(args.sharing)
    calibration_specs = _per_model_specs(args.calibration, len(paths), "--calibration", "models")
    eval_specs = _per_model_specs(args.eval, len(paths), "--eval", "models") if args.eval else None
    if args.calibration_samples is not None and args.calibration_samples <= 0:
        raise UsageError(f"--calibration-samples must be a positive integer. Received: {args.calibration_samples}")
    if not (args.damping >= 0 and np.isfinite(args.damping)):
        raise UsageError(f"--damping must be a finite non-negative number (e.g. 1e-4). Received: {args.damping}")
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer. Received: {args.seed}")
    npz_inputs = [Path(s.name).expanduser() for s in calibration_specs + (eval_specs or []) if s.source == "npz"]
    out = _check_output_file(args.out, (".keras",), "--out", inputs=paths + npz_inputs)
    report_dir = _check_output_dir(args.report, "--report") if args.report else None
    from tfmot_zip.core.selection import SELECTORS
    from tfmot_zip.core.strategies import STRATEGIES

    if args.method not in STRATEGIES:
        raise UsageError(f"Unknown --method {args.method!r}; expected one of {sorted(STRATEGIES)}.")
    if args.selection not in SELECTORS:
        raise UsageError(f"Unknown --selection {args.selection!r}; expected one of {sorted(SELECTORS)}.")

    console.log(f"loading {len(paths)} models")
    models = []
    for i, path in enumerate(console.bar(iterable=paths, desc="loading models", unit="model")):
        models.append(load_model_file(path, f"model {i}"))
    console.log("reading calibration data")
    calibration = _load_specs(calibration_specs, args, need_labels=False, console=console)
    tests = _load_specs(eval_specs, args, need_labels=True, console=console) if eval_specs else None
    for model, d in zip(models, calibration):
        _check_inputs_fit(model, [d], "--calibration")
    if tests is not None:
        for t, (model, d) in enumerate(zip(models, tests)):
            _check_inputs_fit(model, [d], "--eval")
            _check_labels_fit(model, [d], "--eval")
    zipped = _zip_with_progress(
        models,
        tuple(d.x for d in calibration),
        console,
        sharing=sharing,
        method=args.method,
        selection=args.selection,
        damping=float(args.damping),
        calibration_samples=args.calibration_samples,
        single_input=args.single_input,
        seed=args.seed,
    )
    import tfmot_zip

    summary = tfmot_zip.zip_summary(zipped)
    before = after = None
    if tests is not None:
        before = [_accuracy_of(m, [d], console, f"original {m.name}")[0] for m, d in zip(models, tests)]
        after = _accuracy_of(zipped, tests, console, "zipped model")
    console.log(f"saving {out}")
    atomic_save_model(zipped, out)
    print(summary)
    if before is not None:
        for name, b, a in zip(summary.task_names, before, after):
            print(f"{name}: accuracy {b:.2f}% -> {a:.2f}% after zipping (no retraining)")
    print(f"wrote {out} ({_file_size(out):,} bytes)")
    if report_dir is not None:
        from tfmot_zip.report.zip_report import write_zip_report

        sizes = {f"original {i + 1} ({p.suffix or 'SavedModel'})": _file_size(p) for i, p in enumerate(paths)}
        sizes["zipped (.keras)"] = _file_size(out)
        result = write_zip_report(zipped, report_dir, accuracy_before=before, accuracy_after=after, sizes=sizes)
        print(f"wrote report {result['files']['markdown']}")
    return EXIT_OK


def _retrain_callback(console: _Console, steps: int):
    from tfmot_zip.compat import keras

    class _Bar(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.bar = console.bar(total=steps, desc="retraining", unit="step")

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

        def close(self) -> None:
            self.bar.close()

    return _Bar()


def _without_optimizer(model: Any) -> Any:
    """An uncompiled copy with the same weights (``.keras`` files otherwise carry the Adam slots)."""
    from tfmot_zip.compat import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _cmd_retrain(args, console: _Console) -> int:
    path = _check_model_path(args.model, "zipped model")
    if args.steps < 0:
        raise UsageError(f"--steps must be a non-negative integer. Received: {args.steps}")
    if not (args.lr > 0 and np.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number (e.g. 1e-4). Received: {args.lr}")
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be a positive integer. Received: {args.batch_size}")
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer. Received: {args.seed}")
    specs = [parse_data_spec(s) for s in args.data]
    eval_specs = [parse_data_spec(s) for s in args.eval] if args.eval else None
    npz_inputs = [Path(s.name).expanduser() for s in specs + (eval_specs or []) if s.source == "npz"]
    out = _check_output_file(args.out, (".keras",), "--out", inputs=[path] + npz_inputs)
    report_dir = _check_output_dir(args.report, "--report") if args.report else None

    console.log(f"loading {path}")
    model = load_model_file(path, "zipped model")
    n_tasks = len(model.outputs)
    specs = _per_model_specs(args.data, n_tasks, "--data", "tasks")
    eval_specs = _per_model_specs(args.eval, n_tasks, "--eval", "tasks") if args.eval else None
    if not _zip_layers(model):
        console.log(f"note: {path} has no zip layers; retraining it as a plain multi-output model")
    if len(model.inputs) != n_tasks:
        raise UsageError(
            f"Model {str(path)!r} has {len(model.inputs)} input(s) for {n_tasks} tasks; joint retraining feeds each "
            "task its own batch, so it needs one input per task (zip without --single-input to retrain; the "
            "stripped model can still share one input)."
        )
    train = _load_specs(specs, args, need_labels=True, console=console)
    tests = _load_specs(eval_specs, args, need_labels=True, console=console) if eval_specs else None
    index = list(range(n_tasks))
    _check_inputs_fit(model, train, "--data", index)
    _check_labels_fit(model, train, "--data")
    if tests is not None:
        _check_inputs_fit(model, tests, "--eval", index)
        _check_labels_fit(model, tests, "--eval")
    for d in train:
        if len(d) < args.batch_size:
            raise UsageError(
                f"--data {d.spec.text!r} has {len(d)} examples, fewer than --batch-size {args.batch_size}; "
                "lower --batch-size or pass more examples."
            )
    from tfmot_zip import training

    before = _accuracy_of(model, tests, console, "before retraining") if tests is not None else None
    training.compile_multitask(model, args.lr)
    bar = _retrain_callback(console, args.steps)
    try:
        training.retrain(model, [(d.x, d.y) for d in train], args.steps, args.lr, batch_size=args.batch_size, seed=args.seed, callbacks=[bar])
    finally:
        bar.close()
    after = _accuracy_of(model, tests, console, "after retraining") if tests is not None else None
    console.log(f"saving {out}")
    atomic_save_model(_without_optimizer(model), out)  # retrain recompiles anyway; the file stays small
    if before is not None:
        for name, b, a in zip(model.output_names, before, after):
            print(f"{name}: accuracy {b:.2f}% -> {a:.2f}% after {args.steps} steps")
    print(f"wrote {out} ({_file_size(out):,} bytes)")
    if report_dir is not None and _zip_layers(model):
        from tfmot_zip.report.zip_report import write_zip_report

        result = write_zip_report(
            model, report_dir, accuracy_before=None if before is None else {"zipped": before},
            accuracy_after=None if after is None else {f"retrained {args.steps} steps": after},
            sizes={"retrained .keras": _file_size(out)},
        )
        print(f"wrote report {result['files']['markdown']}")
    return EXIT_OK


def _cmd_export(args, console: _Console) -> int:
    path = _check_model_path(args.model, "model")
    quantize = args.quantize
    if quantize not in QUANTIZE_CHOICES:
        raise UsageError(f"Unknown --quantize {quantize!r}; expected one of {', '.join(QUANTIZE_CHOICES)}.")
    if quantize == "int8" and not args.representative:
        raise UsageError(
            "--quantize int8 needs --representative SPEC [SPEC ...] (a few hundred typical inputs per task, e.g. "
            f"{LOCAL_FASHION_MNIST}:train[:200]) to calibrate activation ranges; or use --quantize dynamic."
        )
    rep_specs = [parse_data_spec(s) for s in args.representative] if args.representative else []
    npz_inputs = [Path(s.name).expanduser() for s in rep_specs if s.source == "npz"]
    out = _check_output_file(args.out, (".tflite",), "--out", inputs=[path] + npz_inputs)
    try:
        from tfmot_zip.export.tflite import export_tflite
    except ImportError as err:  # pragma: no cover - export is part of the package
        raise UsageError(f"TFLite export is unavailable ({err}); install the 'tflite' extra: pip install 'tfmot_zip[tflite]'.") from None

    with console.bar(total=3, desc="export", unit="step") as bar:
        bar.set_postfix_str("loading")
        model = load_model_file(path, "model")
        bar.update(1)
        representative = None
        if rep_specs and quantize == "int8":
            specs = _per_model_specs(args.representative, len(model.inputs), "--representative", "inputs")
            data = _load_specs(specs, args, need_labels=False, console=console)
            _check_inputs_fit(model, data, "--representative", list(range(len(model.inputs))))
            representative = [d.x for d in data]
        if _zip_layers(model):
            import tfmot_zip

            bar.set_postfix_str("stripping")
            model = tfmot_zip.strip_zipping(model)
        bar.update(1)
        bar.set_postfix_str(f"converting ({quantize})")
        data = export_tflite(
            model, out, quantize=None if quantize == "none" else quantize, representative_data=representative,
            representative_samples=args.representative_samples,
        )
        bar.update(1)
    print(f"wrote {out} ({len(data):,} bytes, {len(gzip.compress(data, 9)):,} gzipped; quantize={quantize})")
    return EXIT_OK


def inspect_path(path: str | os.PathLike) -> dict:
    """Describes a zipped ``.keras`` model or a ``.tflite`` file as a dict (what ``inspect`` prints).

    For a model: inputs, outputs, parameters and, when zipped, the per-layer summary of
    :func:`tfmot_zip.zip_summary`. For a TFLite file: every signature with its input and output
    names, shapes and dtypes, and the file size raw and gzipped.

    Raises:
        UsageError: a missing file, an unknown suffix, or a file that is not a valid model.

    Example:
        >>> info = inspect_path("zipped.tflite")  # doctest: +SKIP
        >>> sorted(info["signatures"])  # doctest: +SKIP
        ['all_tasks', 'all_tasks_shared_input', 'task_a', 'task_b']
    """
    target = Path(path).expanduser()
    if not target.exists():
        raise UsageError(f"{str(path)!r} does not exist. Pass a .keras model or a .tflite file.")
    if target.suffix.lower() == ".tflite":
        return _inspect_tflite(target)
    if not target.is_dir() and target.suffix.lower() not in MODEL_SUFFIXES:
        raise UsageError(
            f"Cannot inspect {str(path)!r} (suffix {target.suffix or '(none)'!r}): pass a .keras (or .h5) model, "
            "a SavedModel folder or a .tflite file."
        )
    model = load_model_file(target, "model")
    shapes = lambda s: [list(x[1:]) for x in (s if isinstance(s, list) else [s])]  # noqa: E731
    info: dict = {
        "path": str(target),
        "kind": "keras",
        "name": model.name,
        "file_bytes": _file_size(target),
        "inputs": dict(zip(model.input_names, shapes(model.input_shape))),
        "outputs": dict(zip(model.output_names, shapes(model.output_shape))),
        "params": int(model.count_params()),
        "zipped": bool(_zip_layers(model)),
    }
    if info["zipped"]:
        import tfmot_zip

        summary = tfmot_zip.zip_summary(model)
        info["summary"] = summary.as_dict()
        info["summary_text"] = str(summary)
    return info


def _inspect_tflite(path: Path) -> dict:
    raw = path.read_bytes()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - listed in the tflite extra
        raise UsageError("Inspecting .tflite files needs ai-edge-litert: pip install 'tfmot_zip[tflite]'.") from None
    try:
        interpreter = Interpreter(model_content=raw)  # its C++ banner is silenced by main()
        signatures = interpreter.get_signature_list()
    except ValueError as err:
        raise UsageError(f"{str(path)!r} is not a valid TFLite file ({str(err)[:200]}); pass a file written by export.") from None
    details = {}
    for key in signatures:
        runner = interpreter.get_signature_runner(key)
        details[key] = {
            "inputs": {n: _tensor_info(d) for n, d in runner.get_input_details().items()},
            "outputs": {n: _tensor_info(d) for n, d in runner.get_output_details().items()},
        }
    return {
        "path": str(path),
        "kind": "tflite",
        "file_bytes": len(raw),
        "gzipped_bytes": len(gzip.compress(raw, 9)),
        "signatures": details,
    }


def _tensor_info(detail: Mapping) -> dict:
    shape = detail.get("shape_signature", detail.get("shape"))
    return {"shape": [int(v) for v in np.asarray(shape).tolist()], "dtype": np.dtype(detail["dtype"]).name}


def _format_inspect(info: dict) -> str:
    if info["kind"] == "tflite":
        lines = [f"{info['path']}: TFLite, {info['file_bytes']:,} bytes ({info['gzipped_bytes']:,} gzipped)",
                 f"{len(info['signatures'])} signatures:"]
        names = [n for sig in info["signatures"].values() for role in ("inputs", "outputs") for n in sig[role]]
        width = max([len(n) for n in names] + [8]) + 2
        for key, sig in info["signatures"].items():
            lines.append(f"  {key}")
            for role in ("inputs", "outputs"):
                for name, t in sig[role].items():
                    shape = "x".join("?" if v < 0 else str(v) for v in t["shape"])
                    lines.append(f"    {role[:-1]:<7}{name:<{width}}{shape:<14}{t['dtype']}")
        return "\n".join(lines)
    lines = [f"{info['path']}: tf_keras model {info['name']!r}, {info['params']:,} parameters, {info['file_bytes']:,} bytes"]
    width = max([len(n) for role in ("inputs", "outputs") for n in info[role]] + [8]) + 2
    for role in ("inputs", "outputs"):
        for name, shape in info[role].items():
            lines.append(f"  {role[:-1]:<7}{name:<{width}}{tuple(shape)}")
    if info["zipped"]:
        lines += ["", info["summary_text"]]
    else:
        lines.append("  (no zip layers: not a zipped model, or already stripped)")
    return "\n".join(lines)


def _cmd_inspect(args, console: _Console) -> int:
    info = inspect_path(args.path)
    if args.json:
        info.pop("summary_text", None)
        print(json.dumps(info, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    else:
        print(_format_inspect(info))
    return EXIT_OK


def _cmd_demo(args, console: _Console) -> int:
    out = _check_output_dir(args.out, "--out")
    from tfmot_zip.apps.demo import DemoConfig, run_demo

    config = DemoConfig(out_dir=str(out))
    if args.quick:
        config = DemoConfig(out_dir=str(out), sharings=(1.0,), calibration_samples=2000, retrain_steps=100, eval_every=100)
    run_demo(config, log=print)
    print(f"wrote {out / 'report.md'}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------
# Parser and main
# ------------------------------------------------------------------------------------------

_FM = LOCAL_FASHION_MNIST
EXAMPLES = {
    "zip": (
        "tfmot-zip zip a.keras b.keras \\\n"
        f"    --calibration '{_FM}:train[:10000]?classes=0,1,2,3,4' '{_FM}:train[:10000]?classes=5,6,7,8,9' \\\n"
        f"    --eval '{_FM}:test?classes=0,1,2,3,4' '{_FM}:test?classes=5,6,7,8,9' \\\n"
        "    --sharing 0.5 --out zipped.keras --report out/report"
    ),
    "retrain": (
        "tfmot-zip retrain zipped.keras \\\n"
        f"    --data '{_FM}:train?classes=0,1,2,3,4' '{_FM}:train?classes=5,6,7,8,9' \\\n"
        "    --steps 300 --lr 1e-4 --out retrained.keras"
    ),
    "export": (
        "tfmot-zip export retrained.keras --out model.tflite\n"
        f"  tfmot-zip export retrained.keras --out model_int8.tflite --quantize int8 \\\n"
        f"    --representative '{_FM}:train[:200]'"
    ),
    "inspect": "tfmot-zip inspect zipped.keras\n  tfmot-zip inspect model.tflite --json",
    "demo": "tfmot-zip demo --out out/demo --quick",
}

SPEC_HELP = (
    "data specs: NAME:SPLIT (tensorflow-datasets; local_fashion_mnist reads the local Debian files, other names only "
    "if already prepared, never downloaded) or FILE.npz (key 'x', or the first array; labels 'y'); options after '?': "
    "classes=0,1,2 (keep and remap labels), transform=transpose|flip_lr|flip_ud, count=N, scale=auto|none "
    "(auto: uint8 -> [0, 1])."
)


def _subparser(sub, name: str, help_text: str, description: str, common: argparse.ArgumentParser):
    return sub.add_parser(
        name,
        parents=[common],
        help=help_text,
        description=f"{description}\n\n{SPEC_HELP if name in ('zip', 'retrain', 'export') else ''}".rstrip(),
        epilog=f"example:\n  {EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tfmot-zip`` (every subcommand's ``--help`` shows an example).

    Example:
        >>> build_parser().parse_args(["inspect", "zipped.keras"]).command
        'inspect'
    """
    examples = "\n".join(f"  {EXAMPLES[k].splitlines()[0]}" if "\\" not in EXAMPLES[k] else f"  {EXAMPLES[k]}" for k in EXAMPLES)
    parser = argparse.ArgumentParser(
        prog="tfmot-zip",
        description=(
            "Multi-Task Zipping of pre-trained tf_keras models, in the TFMOT order: "
            "zip -> retrain -> export (strip + TFLite) -> inspect."
        ),
        epilog=f"examples:\n{examples}\n\nexit codes: 0 ok, 2 bad arguments or inputs, 1 unexpected failure.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages on stderr")
    common.add_argument("--debug", action="store_true", help="show TensorFlow's logs and full tracebacks")
    common.add_argument("--tfds-data-dir", default=None, metavar="DIR",
                        help="tensorflow-datasets data folder (default: <cache>/tensorflow_datasets for local_fashion_mnist)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _subparser(sub, "zip", "zip pre-trained models into one multi-task model",
                   "Zip two pre-trained tf_keras models (.keras files or SavedModel folders) into one multi-task model.", common)
    p.add_argument("models", nargs="+", metavar="MODEL", help=".keras file or SavedModel folder, one per task")
    p.add_argument("--calibration", nargs="+", required=True, metavar="SPEC",
                   help="inputs to compute layer Hessians: one spec per model, or one for all")
    p.add_argument("--sharing", default="1.0", help="fraction of each hidden layer to share (0..1), or LAYER=F,LAYER=F (default 1.0)")
    p.add_argument("--method", default="mtz", help="mtz (default), euclidean, random or activation")
    p.add_argument("--selection", default="hungarian", help="hungarian (default) or greedy")
    p.add_argument("--damping", type=float, default=1e-4, help="relative damping of the layer Hessians (default 1e-4)")
    p.add_argument("--calibration-samples", type=int, default=10_000, metavar="N", help="at most N samples per model (default 10000)")
    p.add_argument("--single-input", action="store_true", help="one input for every task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", nargs="+", metavar="SPEC", help="labelled test data per model: report accuracy before/after")
    p.add_argument("--out", required=True, metavar="FILE.keras", help="where to write the zipped model")
    p.add_argument("--report", metavar="DIR", help="write a Markdown/JSON/PNG report of the zip into DIR")
    p.set_defaults(handler=_cmd_zip)

    p = _subparser(sub, "retrain", "jointly retrain a zipped model",
                   "Joint retraining: each step one batch of every task, summed losses (shared weights get every task's gradient).", common)
    p.add_argument("model", metavar="ZIPPED.keras")
    p.add_argument("--data", nargs="+", required=True, metavar="SPEC", help="labelled training data, one spec per task (or one for all)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=128, help="examples per task per step (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", nargs="+", metavar="SPEC", help="labelled test data per task: accuracy before/after")
    p.add_argument("--out", required=True, metavar="FILE.keras")
    p.add_argument("--report", metavar="DIR", help="write a report of the retrained model into DIR")
    p.set_defaults(handler=_cmd_retrain)

    p = _subparser(sub, "export", "strip the zipping and write one TFLite file",
                   "Strip the zip layers (standard tf_keras layers, shared weights stored once) and convert to one "
                   "TFLite file with a signature per task.", common)
    p.add_argument("model", metavar="ZIPPED.keras")
    p.add_argument("--out", required=True, metavar="FILE.tflite")
    p.add_argument("--quantize", default="none", choices=QUANTIZE_CHOICES, help="weight/activation quantization (default none)")
    p.add_argument("--representative", nargs="+", metavar="SPEC", help="calibration inputs for int8: one spec per model input, or one for all")
    p.add_argument("--representative-samples", type=int, default=200, metavar="N", help="samples per input used for int8 (default 200)")
    p.set_defaults(handler=_cmd_export)

    p = _subparser(sub, "inspect", "describe a zipped .keras model or a .tflite file",
                   "Per-layer sharing and parameters of a zipped model, or the signatures and size of a TFLite file.", common)
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_cmd_inspect)

    p = _subparser(sub, "demo", "run the main job (LeNet-300-100 pair on Fashion-MNIST)",
                   "Train (once, cached) two LeNet-300-100, zip, retrain, export and write a report.", common)
    p.add_argument("--out", default="out/demo", metavar="DIR", help="output folder (default out/demo)")
    p.add_argument("--quick", action="store_true", help="one sharing fraction, fewer samples and steps (a minute)")
    p.set_defaults(handler=_cmd_demo)
    return parser


def _version() -> str:
    from tfmot_zip import __version__

    return __version__


_USER_ERRORS = (ValueError, TypeError, OSError)


def _is_user_error(err: BaseException) -> bool:
    """Our own validation errors: ``UsageError``, or a ValueError/TypeError/OSError raised in tfmot_zip."""
    if isinstance(err, UsageError):
        return True
    if not isinstance(err, _USER_ERRORS):
        return False
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    try:
        return Path(last.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):  # pragma: no cover - odd frames
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tfmot-zip`` with ``argv`` (default ``sys.argv[1:]``) and returns the exit code.

    Example:
        >>> main(["inspect", "zipped.keras"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # --help, --version, argparse errors (code 2)
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    console = _Console(quiet=args.quiet)
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        sys.stdout.reconfigure(line_buffering=True)  # results interleave with progress in order, even piped
    started = time.perf_counter()
    with _quiet_tensorflow(enabled=not args.debug), _native_stderr_silenced(enabled=not args.debug):
        try:
            code = args.handler(args, console)
        except KeyboardInterrupt:
            print("tfmot-zip: interrupted", file=sys.stderr)
            return 130
        except Exception as err:  # noqa: BLE001 - mapped to exit codes below
            if args.debug:
                import traceback

                traceback.print_exc()
            if _is_user_error(err):
                print(f"tfmot-zip {args.command}: error: {err}", file=sys.stderr)
                return EXIT_USAGE
            print(
                f"tfmot-zip {args.command}: unexpected failure: {type(err).__name__}: {err}\n"
                "Rerun with --debug for the traceback, and report it if the inputs look right.",
                file=sys.stderr,
            )
            return EXIT_FAILURE
    console.log(f"done in {time.perf_counter() - started:.1f} s")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
