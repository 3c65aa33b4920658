"""Data specs: one string that names examples to read, and the function that reads them.

A spec is a tensorflow-datasets name with a split (``local_fashion_mnist:train[:5000]``), a
``.npz`` file (``calib.npz``: inputs ``x``, optional labels ``y``) or a ``.npy`` file of inputs
(``calib.npy``), with optional options after ``?``
(``local_fashion_mnist:train?classes=0,1,2,3,4&count=2000``). :func:`parse_data_spec` checks the
syntax; :func:`load_data_spec` reads the examples as float32 inputs and int64 labels. Nothing is
ever downloaded. Every problem raises ``ValueError`` with a message that says what to do.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["LOCAL_FASHION_MNIST", "SPEC_OPTIONS", "TRANSFORMS", "DataSpec", "LoadedData", "parse_data_spec", "load_data_spec"]

LOCAL_FASHION_MNIST = "local_fashion_mnist"
SPEC_OPTIONS = ("classes", "transform", "count", "scale")
TRANSFORMS = ("none", "transpose", "flip_lr", "flip_ud")


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec (see :func:`parse_data_spec`).

    Attributes:
        text: the spec as written.
        source: "tfds", "npz" or "npy".
        name: the tensorflow-datasets name (tfds) or the file path (npz, npy).
        split: the tfds split expression (e.g. ``train[:5000]``); None for a file.
        classes: keep only these labels, remapped to ``0..len(classes)-1`` in the order given.
        transform: "none", "transpose" (swap height and width), "flip_lr" or "flip_ud".
        count: keep at most this many examples (after the class filter).
        scale: "auto" (uint8 images become float32 in [0, 1], as the zoo models expect) or
            "none" (values kept, cast to float32).

    Example:
        >>> DataSpec("calib.npz", "npz", "calib.npz").transform
        'none'
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
    """Inputs (float32) and labels (int64 or None) read from a :class:`DataSpec`.

    Example:
        >>> import numpy as np
        >>> len(LoadedData(parse_data_spec("a.npz"), np.zeros((3, 2), np.float32)))
        3
    """

    spec: DataSpec
    x: np.ndarray
    y: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.x)


def _spec_error(text: str, problem: str) -> ValueError:
    return ValueError(
        f"Bad data spec {text!r}: {problem}. A spec is NAME:SPLIT for tensorflow-datasets "
        f"(e.g. {LOCAL_FASHION_MNIST}:train[:5000]), a .npz file (key 'x', optional 'y') or a .npy file "
        "of inputs, "
        "optionally followed by ?classes=0,1,2&transform=transpose&count=1000&scale=none."
    )


def _parse_options(text: str, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in query.split("&") if query else ():
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise _spec_error(text, f"option {item!r} is not KEY=VALUE")
        if key not in SPEC_OPTIONS:
            raise _spec_error(text, f"unknown option {key!r} (known: {', '.join(SPEC_OPTIONS)})")
        if key in options:
            raise _spec_error(text, f"option {key!r} is given twice")
        options[key] = value.strip()
    return options


def _parse_classes(text: str, value: str) -> tuple[int, ...]:
    try:
        classes = tuple(int(c) for c in value.split(",") if c.strip() != "")
    except ValueError:
        raise _spec_error(text, f"classes={value!r} is not a comma-separated list of integer labels") from None
    if not classes or min(classes) < 0 or len(set(classes)) != len(classes):
        raise _spec_error(text, f"classes={value!r} must list distinct non-negative labels")
    return classes


def _parse_count(text: str, value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count <= 0:
        raise _spec_error(text, f"count={value!r} must be a positive integer")
    return count


def parse_data_spec(text: str) -> DataSpec:
    """Parses a data spec.

    Grammar: ``SOURCE[?OPTION=VALUE[&OPTION=VALUE...]]``. ``SOURCE`` is a ``.npz`` or ``.npy``
    file path (a ``.npy`` file holds inputs only) or ``NAME:SPLIT`` (a tensorflow-datasets name
    and split expression; the last ``:`` separates them, so ``NAME:VERSION:SPLIT`` works too).
    Options:

    - ``classes=0,1,2``: keep these labels only, remapped to ``0, 1, 2`` in the order given
      (applied after the split slice: ``train[:5000]?classes=0,1,2,3,4`` keeps about 2,500);
    - ``transform=transpose|flip_lr|flip_ud|none``: a spatial transform of every image;
    - ``count=N``: at most ``N`` examples (the first ones, after the class filter);
    - ``scale=auto|none``: ``auto`` (default) turns uint8 images into float32 in [0, 1].

    Raises:
        ValueError: an empty spec, a missing split, an unknown option or a bad value.

    Example:
        >>> spec = parse_data_spec("local_fashion_mnist:train[:5000]?classes=0,1,2,3,4")
        >>> spec.name, spec.split, spec.classes
        ('local_fashion_mnist', 'train[:5000]', (0, 1, 2, 3, 4))
        >>> parse_data_spec("calib.npz?count=100").source, parse_data_spec("inputs.npy").source
        ('npz', 'npy')
    """
    if not isinstance(text, str) or not text.strip():
        raise _spec_error(str(text), "it is empty")
    text = text.strip()
    source, _, query = text.partition("?")
    options = _parse_options(text, query)
    classes = _parse_classes(text, options["classes"]) if "classes" in options else None
    transform = options.get("transform", "none")
    if transform not in TRANSFORMS:
        raise _spec_error(text, f"transform={transform!r} is unknown (known: {', '.join(TRANSFORMS)})")
    count = _parse_count(text, options["count"]) if "count" in options else None
    scale = options.get("scale", "auto")
    if scale not in ("auto", "none"):
        raise _spec_error(text, f"scale={scale!r} must be 'auto' or 'none'")
    common = dict(classes=classes, transform=transform, count=count, scale=scale)
    for suffix in (".npz", ".npy"):
        if source.lower().endswith(suffix):
            return DataSpec(text, suffix[1:], source, None, **common)
    depth, cut = 0, -1
    for position, char in enumerate(source):  # the last ':' outside a slice such as train[:5000]
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == ":" and depth == 0:
            cut = position
    name, split = (source[:cut], source[cut + 1:]) if cut >= 0 else (source, "")
    if not name or not split:
        raise _spec_error(text, "it is neither a .npz or .npy file nor NAME:SPLIT (the split is missing)")
    return DataSpec(text, "tfds", name, split, **common)


def _note(message: str, quiet: bool) -> None:
    if not quiet:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


def _tfds_builder(spec: DataSpec, data_dir: str | os.PathLike | None, quiet: bool):
    """A prepared tensorflow-datasets builder for ``spec`` (never downloads)."""
    if spec.name == LOCAL_FASHION_MNIST:
        from tfmot_zip.data.fashion_mnist import default_cache_dir
        from tfmot_zip.data.tfds_builder import LocalFashionMnist

        folder = Path(data_dir) if data_dir is not None else default_cache_dir() / "tensorflow_datasets"
        builder = LocalFashionMnist(data_dir=os.fspath(folder))
        if not builder.is_prepared():
            _note(f"preparing {LOCAL_FASHION_MNIST} from the local Debian files into {folder} (once, about a minute)", quiet)
            builder.download_and_prepare()
        return builder
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(spec.name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except Exception as err:  # tfds raises DatasetNotFoundError (with the whole catalogue) and others
        raise ValueError(
            f"Data spec {spec.text!r}: tensorflow-datasets has no dataset {spec.name!r} "
            f"({type(err).__name__}). Use {LOCAL_FASHION_MNIST} (Fashion-MNIST from the local Debian "
            "package), a dataset already prepared locally, or a .npz file."
        ) from None
    if not builder.is_prepared():
        raise ValueError(
            f"Data spec {spec.text!r}: dataset {spec.name!r} is not prepared under {builder.data_dir!r}, "
            "and tfmot_zip never downloads. Prepare it once where you have a network "
            f"(tfds.builder({spec.name!r}).download_and_prepare()) and pass --tfds-data-dir, use "
            f"{LOCAL_FASHION_MNIST}, or export the arrays to a .npz file (keys 'x' and 'y')."
        )
    return builder


def _load_tfds(spec: DataSpec, data_dir: str | os.PathLike | None, quiet: bool) -> tuple[np.ndarray, np.ndarray]:
    builder = _tfds_builder(spec, data_dir, quiet)
    if not builder.info.supervised_keys:
        raise ValueError(
            f"Data spec {spec.text!r}: dataset {spec.name!r} has no supervised (input, label) keys; "
            "export its inputs and labels to a .npz file (keys 'x' and 'y') instead."
        )
    try:
        total = int(builder.info.splits[spec.split].num_examples)
        dataset = builder.as_dataset(split=spec.split, as_supervised=True, shuffle_files=False)
    except Exception as err:  # bad split expressions raise several exception types in tfds
        known = ", ".join(sorted(builder.info.splits.keys()))
        raise ValueError(
            f"Data spec {spec.text!r}: bad split {spec.split!r} for {spec.name!r} ({str(err).splitlines()[0][:200]}). "
            f"Known splits: {known}; slices look like train[:5000] or test[10%:]."
        ) from None
    import tensorflow_datasets as tfds
    from tqdm import tqdm

    xs, ys = [], []
    with tqdm(total=total, desc=f"reading {spec.name}:{spec.split}", unit="ex", file=sys.stderr, leave=False,
              dynamic_ncols=True, disable=quiet) as bar:
        for x, y in tfds.as_numpy(dataset.batch(1024)):
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
            bar.update(len(x))
    if not xs:
        raise ValueError(f"Data spec {spec.text!r}: split {spec.split!r} of {spec.name!r} is empty; choose a non-empty slice.")
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _read_npz(spec: DataSpec, path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The 'x' (or first) and 'y' arrays of a .npz file; ``(None, None)`` when it holds none."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if not keys:
                return None, None
            x = np.asarray(archive["x"] if "x" in keys else archive[keys[0]])
            y = np.asarray(archive["y"]) if "y" in keys else None
    except Exception as err:  # zipfile/pickle/format errors
        raise ValueError(
            f"Data spec {spec.text!r}: cannot read {str(path)!r} as a .npz file ({type(err).__name__}: "
            f"{str(err)[:160]}). Save it with np.savez(path, x=inputs, y=labels)."
        ) from None
    return x, y


def _read_npy(spec: DataSpec, path: Path) -> np.ndarray:
    """The inputs array of a .npy file."""
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except Exception as err:  # format errors, or an object array (which needs pickle)
        raise ValueError(
            f"Data spec {spec.text!r}: cannot read {str(path)!r} as a .npy file of numbers ({type(err).__name__}: "
            f"{str(err)[:160]}). Save it with np.save(path, inputs), or labels too with np.savez(path, x=inputs, y=labels)."
        ) from None


def _load_npz(spec: DataSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """A ``.npz`` spec's inputs and labels (None when it has none), or a ``.npy`` spec's inputs."""
    path = Path(spec.name).expanduser()
    if not path.is_file():
        raise ValueError(f"Data spec {spec.text!r}: file {str(path)!r} does not exist. Pass an existing .{spec.source} file.")
    x, y = (_read_npy(spec, path), None) if spec.source == "npy" else _read_npz(spec, path)
    if x is None:
        raise ValueError(f"Data spec {spec.text!r}: {str(path)!r} holds no arrays; save one with np.savez(path, x=inputs, y=labels).")
    if x.ndim == 0:
        raise ValueError(f"Data spec {spec.text!r}: the inputs are a scalar; save an array with examples along the first axis.")
    if y is None:
        return x, None
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"Data spec {spec.text!r}: labels 'y' have shape {y.shape} but inputs 'x' have {len(x)} examples; "
            "save one integer label per example (shape (N,))."
        )
    whole_floats = np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    if not (np.issubdtype(y.dtype, np.integer) or whole_floats):
        raise ValueError(f"Data spec {spec.text!r}: labels 'y' must be integers; received dtype {y.dtype}.")
    return x, y.astype(np.int64)


def _select_classes(spec: DataSpec, x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if y is None:
        raise ValueError(f"Data spec {spec.text!r}: classes= needs labels, but the data has none (save inputs and "
                         "labels with np.savez(path, x=inputs, y=labels)).")
    keep = np.isin(y, spec.classes)
    if not keep.any():
        present = np.unique(y).tolist()
        raise ValueError(
            f"Data spec {spec.text!r}: no example has a label in classes={list(spec.classes)}; the data has "
            f"labels {present[:20]}{' ...' if len(present) > 20 else ''}. Choose classes among them."
        )
    lookup = np.full(int(max(max(spec.classes), y.max())) + 1, -1, dtype=np.int64)
    lookup[list(spec.classes)] = np.arange(len(spec.classes))
    return x[keep], lookup[y[keep]]


def _apply_options(spec: DataSpec, x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    if spec.classes is not None:
        x, y = _select_classes(spec, x, y)
    if spec.count is not None:
        x = x[: spec.count]
        y = None if y is None else y[: spec.count]
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"Data spec {spec.text!r}: inputs have dtype {x.dtype}; numeric inputs are needed.")
    if spec.scale == "auto" and x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    else:
        x = x.astype(np.float32, copy=False)
    if spec.transform != "none":
        if x.ndim != 4:
            raise ValueError(
                f"Data spec {spec.text!r}: transform={spec.transform} needs images (N, H, W, C); the inputs have shape {x.shape}."
            )
        axis = {"transpose": None, "flip_lr": 2, "flip_ud": 1}[spec.transform]
        x = np.transpose(x, (0, 2, 1, 3)) if axis is None else np.flip(x, axis=axis)
        x = np.ascontiguousarray(x)
    if len(x) == 0:
        raise ValueError(f"Data spec {spec.text!r} selects no examples; choose a non-empty slice.")
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
        quiet: hide the progress bar and notes (on stderr).

    Returns:
        A :class:`LoadedData`.

    Raises:
        ValueError: a bad spec, a missing file, an unknown or unprepared dataset, a bad split,
            missing or malformed labels, or a selection with no example.
        TypeError: ``spec`` is neither a string nor a :class:`DataSpec`.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "d.npz"
        >>> np.savez(path, x=np.zeros((6, 2, 2, 1), np.uint8), y=np.arange(6) % 3)
        >>> data = load_data_spec(f"{path}?classes=2,0", need_labels=True)
        >>> data.x.shape, data.x.dtype.name, data.y.tolist()
        ((4, 2, 2, 1), 'float32', [1, 0, 1, 0])
    """
    if isinstance(spec, str):
        spec = parse_data_spec(spec)
    if not isinstance(spec, DataSpec):
        raise TypeError(f"Expected a data spec string or DataSpec. Received: spec={spec!r}")
    x, y = _load_npz(spec) if spec.source in ("npz", "npy") else _load_tfds(spec, tfds_data_dir, quiet)
    x, y = _apply_options(spec, x, y)
    if need_labels and y is None:
        raise ValueError(
            f"Data spec {spec.text!r} has no labels, which training and evaluation need: use a "
            "supervised tensorflow-datasets split or a .npz file with 'x' and 'y'."
        )
    return LoadedData(spec, x, y)
