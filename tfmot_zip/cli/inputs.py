"""Command-line inputs that are not files: ``--sharing``, data specs given per model or per task,
and checks of loaded data against a model (shapes, labels) before any long work starts.

Only the syntax is checked here; values (a sharing fraction above 1, an unknown layer) are checked
by the library, whose ``ValueError`` the command line shows as a user error (exit 2).

:mod:`tfmot_zip.data.specs` is imported where it is used: importing ``tfmot_zip.data`` imports
TensorFlow, whose start-up logs ``main`` silences first.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Sequence

from tfmot_zip.cli.console import Console
from tfmot_zip.cli.errors import UsageError
from tfmot_zip.data.checks import require_finite

if TYPE_CHECKING:
    from tfmot_zip.data.specs import DataSpec, LoadedData

__all__ = [
    "FASHION_MNIST", "parse_sharing", "per_model_specs", "load_specs", "check_inputs_fit", "check_labels_fit", "accuracy_of",
]

FASHION_MNIST = "local_fashion_mnist"  # tfmot_zip.data.specs.LOCAL_FASHION_MNIST, for help texts


def parse_sharing(text: str) -> float | dict[str, float]:
    """Parses ``--sharing``: one number (``0.5``) or one per layer (``fc1=1.0,fc2=0.5``).

    Only the syntax is checked: ``zip_models`` checks that fractions lie in [0, 1] and that
    the layers exist.

    Raises:
        UsageError: not a number, or a malformed or repeated ``name=fraction`` item.

    Example:
        >>> parse_sharing("0.5")
        0.5
        >>> parse_sharing("fc1=1.0,fc2=0.25")
        {'fc1': 1.0, 'fc2': 0.25}
    """

    def number(value: str, where: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise UsageError(
                f"Expected a sharing fraction between 0 and 1 (1.0 shares every unit of a layer). Received: "
                f"{where}={value!r}. Pass e.g. --sharing 0.5 or --sharing fc1=1.0,fc2=0.5."
            ) from None

    text = str(text).strip()
    if "=" not in text:
        return number(text, "--sharing")
    result: dict[str, float] = {}
    for item in text.split(","):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name:
            raise UsageError(f"Bad --sharing item {item!r}; expected LAYER=FRACTION, e.g. --sharing fc1=1.0,fc2=0.5.")
        if name in result:
            raise UsageError(f"--sharing names layer {name!r} twice; give each layer once.")
        result[name] = number(value.strip(), f"--sharing {name}")
    return result


def per_model_specs(specs: Sequence[str], count: int, flag: str, what: str) -> list[DataSpec]:
    """One parsed spec per model (or task, or input): ``count`` specs, or one repeated.

    Example:
        >>> [s.name for s in per_model_specs(["a.npz"], 2, "--calibration", "models")]
        ['a.npz', 'a.npz']
        >>> per_model_specs(["a.npz"] * 3, 2, "--calibration", "models")
        Traceback (most recent call last):
        ...
        tfmot_zip.cli.errors.UsageError: --calibration got 3 specs for 2 models; pass one spec per model (in the same order), or a single spec for all.
    """
    from tfmot_zip.data.specs import parse_data_spec

    parsed = [parse_data_spec(s) for s in specs]
    if len(parsed) == 1 and count > 1:
        return parsed * count
    if len(parsed) != count:
        raise UsageError(
            f"{flag} got {len(parsed)} specs for {count} {what}; pass one spec per {what[:-1]} (in the same order), "
            "or a single spec for all."
        )
    return parsed


def load_specs(specs: Sequence[DataSpec], args: argparse.Namespace, need_labels: bool, console: Console) -> list[LoadedData]:
    """Loads every spec once (a spec repeated for several models is read once).

    Example:
        >>> import argparse, tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from tfmot_zip.data.specs import parse_data_spec
        >>> path = Path(tempfile.mkdtemp()) / "d.npz"
        >>> np.savez(path, x=np.zeros((4, 3), np.float32))
        >>> data = load_specs([parse_data_spec(str(path))] * 2, argparse.Namespace(tfds_data_dir=None), False, Console(True))
        >>> data[0] is data[1], data[0].x.shape
        (True, (4, 3))
    """
    from tfmot_zip.data.specs import load_data_spec

    cache: dict[str, LoadedData] = {}
    for spec in specs:
        if spec.text not in cache:
            cache[spec.text] = load_data_spec(spec, need_labels=need_labels, tfds_data_dir=args.tfds_data_dir, quiet=console.quiet)
    return [cache[spec.text] for spec in specs]


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def check_inputs_fit(model: Any, data: Sequence[LoadedData], flag: str, input_index: Sequence[int] | None = None) -> None:
    """Data shapes against the model's inputs, and finite values (before any work).

    ``data[i]`` feeds input ``input_index[i]`` (default: input ``i``, or the last one). NaN and inf
    values are refused as the library refuses them (:func:`tfmot_zip.data.checks.require_finite`:
    with their counts), as a :class:`UsageError`.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.data.specs import LoadedData, parse_data_spec
        >>> model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> data = LoadedData(parse_data_spec("d.npz"), np.zeros((4, 5), np.float32))
        >>> check_inputs_fit(model, [data], "--eval")
        Traceback (most recent call last):
        ...
        tfmot_zip.cli.errors.UsageError: --eval 'd.npz' has samples of shape (5,), but the model input is (3,). Pass data of the model's input shape (use ?transform=... or another dataset).
    """
    shapes = [tuple(s[1:]) for s in _as_list(model.input_shape)]
    for i, d in enumerate(data):
        shape = shapes[input_index[i] if input_index is not None else min(i, len(shapes) - 1)]
        if tuple(d.x.shape[1:]) != shape:
            raise UsageError(
                f"{flag} {d.spec.text!r} has samples of shape {tuple(d.x.shape[1:])}, but the model input is {shape}. "
                "Pass data of the model's input shape (use ?transform=... or another dataset)."
            )
        try:
            require_finite(d.x, f"{flag} {d.spec.text!r}")  # the library's message, with the counts
        except ValueError as err:
            raise UsageError(str(err)) from None


def check_labels_fit(model: Any, data: Sequence[LoadedData], flag: str) -> None:
    """Labels of task ``t`` (``data[t]``) within the classes of the model's output ``t``.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.data.specs import LoadedData, parse_data_spec
        >>> model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,), name="head")])
        >>> data = LoadedData(parse_data_spec("d.npz"), np.zeros((2, 3), np.float32), np.array([0, 4]))
        >>> check_labels_fit(model, [data], "--eval")
        Traceback (most recent call last):
        ...
        tfmot_zip.cli.errors.UsageError: --eval 'd.npz' has labels 0..4, but task 0 ('head') has 2 classes (labels 0..1). Select and remap its classes, e.g. ?classes=0,1.
    """
    units = [int(s[-1]) for s in _as_list(model.output_shape)]
    for t, d in enumerate(data):
        if d.y is None:
            raise UsageError(f"{flag} {d.spec.text!r} has no labels; pass labelled data (a .npz with 'y').")
        low, high = int(d.y.min()), int(d.y.max())
        if low < 0 or high >= units[t]:
            raise UsageError(
                f"{flag} {d.spec.text!r} has labels {low}..{high}, but task {t} ({model.output_names[t]!r}) has "
                f"{units[t]} classes (labels 0..{units[t] - 1}). Select and remap its classes, e.g. "
                f"?classes={','.join(str(c) for c in range(units[t]))}."
            )


def accuracy_of(model: Any, tests: Sequence[LoadedData], console: Console, desc: str) -> list[float]:
    """Per-task test accuracy (percent, two decimals) of ``model`` on labelled data.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.data.specs import LoadedData, parse_data_spec
        >>> model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,), kernel_initializer="zeros")])
        >>> data = LoadedData(parse_data_spec("d.npz"), np.ones((4, 3), np.float32), np.zeros(4, np.int64))
        >>> accuracy_of(model, [data], Console(quiet=True), "a model")
        [100.0]
    """
    from tfmot_zip.training import evaluate_tasks

    console.log(f"evaluating {desc}")
    return [round(a, 2) for a in evaluate_tasks(model, [(d.x, d.y) for d in tests])]
