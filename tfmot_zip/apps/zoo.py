"""A small model zoo (LeNets, a small VGG, CIFAR ResNets, MobileNetV2) and cached training on tasks.

The builders return plain, uncompiled tf_keras models with readable layer names (``fc1``, ``conv1``,
``head``...). :func:`train_on_task` trains one on a :mod:`tfmot_zip.data` task and caches the result on
disk (``$TFMOT_ZIP_CACHE`` or ``~/.cache/tfmot_zip``), so examples, benchmarks and tests pay for training
once.

Example:
    >>> from tfmot_zip.apps import zoo
    >>> zoo.lenet_300_100().count_params()
    266610

    ``zoo.train_on_task("lenet_300_100", "classes_0_4", seed=0)`` trains (or loads) one on
    Fashion-MNIST; its ``test_accuracy`` is about 90.7 (percent).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from tfmot_zip.apps.architectures import (
    Shape,
    example_pair,
    lenet5,
    lenet5_caffe,
    lenet_300_100,
    mobilenet_v2,
    resnet,
    resnet20,
    resnet32,
    resnet56,
    resnet110,
    small_vgg,
)
from tfmot_zip.compat import keras
from tfmot_zip.data.tasks import Task, make_task
from tfmot_zip.data.fashion_mnist import default_cache_dir
from tfmot_zip.io import atomic_save_model, atomic_write_text, versions

__all__ = [
    "example_pair",
    "ARCHITECTURES",
    "DEFAULT_EPOCHS",
    "TrainedModel",
    "build_model",
    "lenet5",
    "lenet5_caffe",
    "lenet_300_100",
    "mobilenet_v2",
    "resnet",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "small_vgg",
    "train_on_task",
]

#: Bumped when the training recipe changes, so stale cache entries are not reused.
_CACHE_FORMAT = 1


#: Architecture name -> builder ``(num_classes, input_shape, name) -> keras.Model``.
ARCHITECTURES: dict[str, Callable[..., "keras.Model"]] = {
    "lenet_300_100": lenet_300_100,
    "lenet5": lenet5,
    "lenet5_caffe": lenet5_caffe,
    "small_vgg": small_vgg,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "mobilenet_v2": mobilenet_v2,
}
#: Default training epochs per architecture (docs/ZOO.md has the measured times and accuracies).
DEFAULT_EPOCHS = {
    "lenet_300_100": 10,
    "lenet5": 10,
    "lenet5_caffe": 10,
    "small_vgg": 8,
    "resnet20": 8,
    "resnet32": 8,
    "resnet56": 8,
    "resnet110": 8,
    "mobilenet_v2": 10,
}


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture: arch={arch!r}. Known architectures: {', '.join(ARCHITECTURES)}."
        )
    return arch


def build_model(
    arch: str, num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: Optional[str] = None
) -> "keras.Model":
    """Build a zoo architecture by name.

    Raises:
        ValueError: unknown ``arch`` (the message lists the known ones).

    Example:
        >>> build_model("lenet5", num_classes=5).output_shape
        (None, 5)
    """
    _check_arch(arch)
    return ARCHITECTURES[arch](num_classes=num_classes, input_shape=input_shape, name=name or arch)


# --------------------------------------------------------------------------------------------------
# Cached training
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainedModel:
    """A zoo model trained on a task, with the figures recorded when it was trained.

    Attributes:
        model: the trained tf_keras model (compiled with Adam 1e-3, sparse categorical crossentropy,
            accuracy).
        task: the :class:`~tfmot_zip.data.Task` it was trained on.
        train_steps: optimizer steps the training took (epochs x batches per epoch).
        test_accuracy: top-1 accuracy on the task's full test split, in percent.
        path: the cached ``.keras`` file.
    """

    model: "keras.Model"
    task: Task
    train_steps: int
    test_accuracy: float
    path: Path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "task"


def _task_fingerprint(task: Task) -> str:
    """Short hash of a task's data, so two tasks with one name never share a cache entry."""
    digest = hashlib.sha1()
    digest.update(repr((task.name, task.num_classes, task.classes)).encode())
    for array in (task.x_train, task.y_train, task.x_test, task.y_test):
        array = np.ascontiguousarray(array)
        digest.update(repr((array.shape, array.dtype.str)).encode())
        flat = array.reshape(-1)
        # Labels whole; images sparsely (a strided sample is enough to tell datasets apart).
        sample = flat if array.ndim <= 1 else flat[:: max(1, flat.size // 200_000)]
        digest.update(np.ascontiguousarray(sample).tobytes())
    return digest.hexdigest()[:12]


def _compile(model: "keras.Model") -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _subsample(x: np.ndarray, y: np.ndarray, count: Optional[int], seed: int):
    if count is None or count >= len(y):
        return x, y
    order = np.sort(np.random.default_rng(seed).choice(len(y), size=count, replace=False))
    return x[order], y[order]


def _percent_from_sidecar(info: dict) -> float:
    """Test accuracy in percent from a cache sidecar (older sidecars stored a fraction)."""
    if "test_accuracy_percent" in info:
        return float(info["test_accuracy_percent"])
    return 100.0 * float(info["test_accuracy"])


def train_on_task(
    arch: str,
    task: Union[str, Task],
    *,
    seed: int = 0,
    epochs: Optional[int] = None,
    batch_size: int = 128,
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
    verbose: int = 0,
    max_train_samples: Optional[int] = None,
) -> TrainedModel:
    """Train a zoo architecture on a task, or load it from the cache if it was trained before.

    Training: ``keras.utils.set_random_seed(seed)``, build ``arch`` with the task's classes and the name
    ``f"{arch}_{task.name}_s{seed}"``, Adam 1e-3 with sparse categorical crossentropy, ``epochs`` passes
    over the task's train split, then accuracy on its full test split. The model (``.keras``) and a JSON
    sidecar (train_steps, test_accuracy, epochs, seed, versions) are written atomically to ``cache_dir``
    under a key made of arch, task (name and a hash of its data), seed, epochs, batch_size and
    max_train_samples. A later call with the same key loads the model (``compile=False``, then
    recompiled) and returns the stored figures without training.

    Args:
        arch: one of :data:`ARCHITECTURES` ("lenet_300_100", "lenet5", "lenet5_caffe", "small_vgg",
            "resnet20", "resnet32", "resnet56", "resnet110", "mobilenet_v2").
        task: a task name for :func:`tfmot_zip.data.make_task`, or a :class:`~tfmot_zip.data.Task`.
        seed: random seed for initialisation, shuffling and subsampling.
        epochs: passes over the training data; default :data:`DEFAULT_EPOCHS` [arch].
        batch_size: training batch size.
        cache_dir: cache folder; default ``$TFMOT_ZIP_CACHE`` or ``~/.cache/tfmot_zip``
            (models go in its ``zoo`` subfolder).
        verbose: Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        max_train_samples: train on a seeded random subset of this many examples (quick runs, tests).

    Returns:
        A :class:`TrainedModel`.

    Raises:
        ValueError: unknown ``arch`` or task name, or a non-positive ``epochs``/``batch_size``/
            ``max_train_samples``.

    Example:
        >>> import tempfile
        >>> trained = train_on_task("lenet_300_100", "classes_0_4", epochs=1,
        ...                         max_train_samples=2000, cache_dir=tempfile.mkdtemp())
        >>> trained.train_steps
        16
    """
    _check_arch(arch)
    if isinstance(task, str):
        task = make_task(task, seed=seed)
    elif not isinstance(task, Task):
        raise TypeError(
            f"task must be a task name (str) or a tfmot_zip.data.Task; received {type(task).__name__}. "
            "Use tfmot_zip.data.make_task(name) or make_class_task(classes)."
        )
    if epochs is None:
        epochs = DEFAULT_EPOCHS[arch]
    checked = {"epochs": epochs, "batch_size": batch_size, "max_train_samples": max_train_samples}
    for argument, value in checked.items():
        if value is None and argument == "max_train_samples":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"Expected a positive integer. Received: {argument}={value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int; received seed={seed!r}.")
    epochs, batch_size, seed = int(epochs), int(batch_size), int(seed)

    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "zoo"
    folder.mkdir(parents=True, exist_ok=True)
    samples = "all" if max_train_samples is None else str(int(max_train_samples))
    fingerprint = _task_fingerprint(task)
    key = (
        f"{arch}_{_safe(task.name)}_s{seed}_e{epochs}_b{batch_size}_n{samples}"
        f"_{fingerprint}_v{_CACHE_FORMAT}"
    )
    model_path, info_path = folder / f"{key}.keras", folder / f"{key}.json"
    model_name = f"{arch}_{_safe(task.name)}_s{seed}"

    if model_path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        model = keras.models.load_model(model_path, compile=False)
        _compile(model)
        return TrainedModel(
            model=model,
            task=task,
            train_steps=int(info["train_steps"]),
            test_accuracy=_percent_from_sidecar(info),
            path=model_path,
        )

    keras.utils.set_random_seed(seed)
    x_train, y_train = _subsample(task.x_train, task.y_train, max_train_samples, seed)
    model = build_model(
        arch, num_classes=task.num_classes, input_shape=task.x_train.shape[1:], name=model_name
    )
    _compile(model)
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)
    train_seconds = time.perf_counter() - started
    _, test_fraction = model.evaluate(task.x_test, task.y_test, batch_size=1024, verbose=0)
    test_accuracy = 100.0 * float(test_fraction)
    train_steps = epochs * math.ceil(len(y_train) / batch_size)

    atomic_save_model(model, model_path)
    info = {
        "arch": arch,
        "task": task.name,
        "task_fingerprint": fingerprint,
        "classes": list(task.classes),
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "max_train_samples": max_train_samples,
        "train_examples": int(len(y_train)),
        "train_steps": int(train_steps),
        "train_seconds": round(train_seconds, 3),
        "test_accuracy_percent": float(test_accuracy),
        "versions": versions(),
    }
    # The sidecar goes last: an entry counts as cached only when both files exist.
    atomic_write_text(info_path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return TrainedModel(
        model=model,
        task=task,
        train_steps=int(train_steps),
        test_accuracy=float(test_accuracy),
        path=model_path,
    )
