"""Tasks carved out of Fashion-MNIST, and the multi-task input pipeline used to retrain zipped models.

A :class:`Task` is a labelled train/test pair of numpy arrays. The named tasks cover the pairs the
project measures: the same task twice (train it with two seeds), classes 0-4 versus 5-9, three class
groups, and a second input domain made honestly from the same images (every image transposed).

:func:`multitask` zips one dataset per task into ``((x_1, ..., x_T), (y_1, ..., y_T))`` batches, the
format a zipped model with one input and one output per task trains on.

Example:
    >>> from tfmot_zip import data
    >>> task_a, task_b = data.make_task("classes_0_4"), data.make_task("classes_5_9")
    >>> ds = data.multitask((task_a.x_train, task_a.y_train), (task_b.x_train, task_b.y_train))
    >>> (xa, xb), (ya, yb) = next(iter(ds))
    >>> tuple(xa.shape), tuple(yb.shape)
    ((128, 28, 28, 1), (128,))
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from tfmot_zip.compat import tf
from tfmot_zip.data.checks import require_real_numbers, to_array
from tfmot_zip.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

__all__ = [
    "TASK_NAMES",
    "Task",
    "as_inputs",
    "dataset_input_chunks",
    "make_class_task",
    "make_task",
    "multitask",
    "transpose_images",
]

NUM_FASHION_MNIST_CLASSES = len(CLASS_NAMES)

ImageTransform = Callable[[np.ndarray], np.ndarray]
TaskData = Union[tuple, "tf.data.Dataset"]


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """One classification task: train and test arrays with labels remapped to ``0..num_classes-1``.

    Attributes:
        name: identifier, used in model names and cache keys (e.g. ``"classes_0_4"``).
        x_train: float32 images (N, 28, 28, 1) in [0, 1], read-only.
        y_train: int64 labels (N,) in ``0..num_classes-1``, read-only.
        x_test: float32 images (M, 28, 28, 1), read-only.
        y_test: int64 labels (M,), read-only.
        num_classes: number of output classes.
        classes: the original Fashion-MNIST label of each task label (``classes[k]`` became ``k``).

    Example:
        >>> task = make_task("classes_5_9")
        >>> task.num_classes, task.classes
        (5, (5, 6, 7, 8, 9))
    """

    name: str
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    num_classes: int
    classes: tuple[int, ...]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Fashion-MNIST names of the task's classes, in task-label order."""
        return tuple(CLASS_NAMES[c] for c in self.classes)

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x_train, y_train)``, ready for :func:`multitask`."""
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x_test, y_test)``."""
        return self.x_test, self.y_test

    def __repr__(self) -> str:
        return (
            f"Task(name={self.name!r}, num_classes={self.num_classes}, classes={self.classes}, "
            f"train={len(self.y_train)}, test={len(self.y_test)})"
        )


def transpose_images(images: np.ndarray) -> np.ndarray:
    """Swap the height and width axes of a batch of images (N, H, W, C) -> (N, W, H, C).

    Example:
        >>> transpose_images(np.zeros((2, 3, 4, 1))).shape
        (2, 4, 3, 1)
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"transpose_images expects a batch of images (N, H, W, C); received shape {images.shape}. "
            "Add the batch and channel axes first."
        )
    return np.ascontiguousarray(np.transpose(images, (0, 2, 1, 3)))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _select(
    x: np.ndarray, y: np.ndarray, classes: tuple[int, ...], transform: Optional[ImageTransform]
) -> tuple[np.ndarray, np.ndarray]:
    lookup = np.full(NUM_FASHION_MNIST_CLASSES, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes), dtype=np.int64)
    if len(classes) == NUM_FASHION_MNIST_CLASSES and classes == tuple(range(NUM_FASHION_MNIST_CLASSES)):
        x_sel, y_sel = x, y  # the whole split, no copy needed unless transformed
    else:
        keep = lookup[y] >= 0
        x_sel, y_sel = x[keep], lookup[y[keep]]
    if transform is not None:
        x_sel = np.asarray(transform(x_sel), dtype=np.float32)
        if x_sel.ndim != 4 or len(x_sel) != len(y_sel):
            raise ValueError(
                f"transform must map images (N, H, W, C) to images (N, H', W', C'); it returned shape "
                f"{x_sel.shape} for {len(y_sel)} images. Return one transformed image per input image."
            )
    elif x_sel is x:
        return x, y
    return _read_only(np.ascontiguousarray(x_sel)), _read_only(np.ascontiguousarray(y_sel))


def make_class_task(
    classes: Sequence[int],
    name: Optional[str] = None,
    transform: Optional[ImageTransform] = None,
) -> Task:
    """Build a task from a subset of Fashion-MNIST classes, labels remapped in the order given.

    Args:
        classes: original labels to keep (0..9, no repeats); ``classes[k]`` becomes task label ``k``.
        name: task name; defaults to ``"classes_" + "_".join(classes)`` (plus ``"_transformed"``).
        transform: optional function applied to the image arrays (N, 28, 28, 1) of both splits, e.g.
            :func:`transpose_images` to build a second input domain.

    Returns:
        A :class:`Task` with read-only arrays.

    Raises:
        ValueError: ``classes`` is empty, repeats a class, or holds a label outside 0..9.

    Example:
        >>> task = make_class_task([7, 2], name="sneaker_vs_pullover")
        >>> task.num_classes, sorted(set(task.y_test.tolist()))
        (2, [0, 1])
    """
    try:
        classes_tuple = tuple(int(c) for c in classes)
    except (TypeError, ValueError):
        raise ValueError(
            f"classes must be a sequence of integer labels in 0..9; received {classes!r}."
        ) from None
    if not classes_tuple:
        raise ValueError("classes is empty; pass at least one Fashion-MNIST label in 0..9, e.g. [0, 1].")
    bad = [c for c in classes_tuple if not 0 <= c < NUM_FASHION_MNIST_CLASSES]
    if bad:
        raise ValueError(
            f"classes holds labels outside 0..{NUM_FASHION_MNIST_CLASSES - 1}: {bad} "
            f"(classes={list(classes_tuple)}). "
            "Fashion-MNIST labels are 0..9."
        )
    if len(set(classes_tuple)) != len(classes_tuple):
        raise ValueError(f"classes repeats a label: {list(classes_tuple)}. List each class once.")
    if name is None:
        name = "classes_" + "_".join(map(str, classes_tuple)) + ("_transformed" if transform else "")
    x_train, y_train = _select(*load_fashion_mnist("train"), classes_tuple, transform)
    x_test, y_test = _select(*load_fashion_mnist("test"), classes_tuple, transform)
    return Task(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(classes_tuple),
        classes=classes_tuple,
    )


_ALL = tuple(range(NUM_FASHION_MNIST_CLASSES))
# name -> (classes, transform)
_NAMED_TASKS: dict[str, tuple[tuple[int, ...], Optional[ImageTransform]]] = {
    "all": (_ALL, None),
    "classes_0_4": ((0, 1, 2, 3, 4), None),
    "classes_5_9": ((5, 6, 7, 8, 9), None),
    "classes_0_2": ((0, 1, 2), None),
    "classes_3_5": ((3, 4, 5), None),
    "classes_6_9": ((6, 7, 8, 9), None),
    "all_transposed": (_ALL, transpose_images),
}
#: Names accepted by :func:`make_task`.
TASK_NAMES = tuple(_NAMED_TASKS)


@functools.lru_cache(maxsize=16)
def _make_named_task(name: str) -> Task:
    classes, transform = _NAMED_TASKS[name]
    return make_class_task(classes, name=name, transform=transform)


def make_task(name: str, seed: int = 0) -> Task:
    """Build a named Fashion-MNIST task (cached in-process).

    Known names: ``"all"`` (10 classes), ``"classes_0_4"`` and ``"classes_5_9"`` (5 classes each,
    labels remapped to 0..4), ``"classes_0_2"``, ``"classes_3_5"``, ``"classes_6_9"`` (three groups
    for 3-task experiments), and ``"all_transposed"`` (all classes, every image transposed: a second
    input domain with the same labels).

    Args:
        name: one of :data:`TASK_NAMES`.
        seed: accepted so a task can be named together with a training seed (``make_task("all", 1)``);
            the data itself does not depend on it (seeds differ only in training, see
            :func:`tfmot_zip.apps.zoo.train_on_task`). Must be an int.

    Returns:
        A :class:`Task` with read-only arrays; the same object on repeated calls.

    Raises:
        ValueError: unknown ``name`` (the message lists the known names).

    Example:
        >>> task = make_task("classes_0_4")
        >>> task.num_classes, task.x_train.shape
        (5, (30000, 28, 28, 1))
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int; received seed={seed!r}.")
    if name not in _NAMED_TASKS:
        raise ValueError(
            f"Unknown task name: name={name!r}. Known tasks: {', '.join(TASK_NAMES)}. "
            "For another class subset use make_class_task(classes, name=..., transform=...)."
        )
    return _make_named_task(name)


# --------------------------------------------------------------------------------------------------
# Multi-task pipeline
# --------------------------------------------------------------------------------------------------


def _check_positive_int(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"Expected a positive integer. Received: {argument}={value!r}")
    return int(value)


def _task_dataset(
    data: TaskData, index: int, *, batch_size: int, shuffle: bool, seed: int, repeat: bool
) -> "tf.data.Dataset":
    """Batched (x, y) dataset for one task."""
    where = f"datasets[{index}]"
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(
                f"{where} is a tf.data.Dataset whose elements are {spec}; multitask needs unbatched "
                "(x, y) pairs. Map it first, e.g. ds.map(lambda d: (d['image'], d['label']))."
            )
        dataset = data
        if shuffle:
            cardinality = int(data.cardinality())
            buffer = cardinality if 0 < cardinality <= 60000 else 10000
            dataset = dataset.shuffle(buffer, seed=seed + index, reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()
        return dataset.batch(batch_size, drop_remainder=True)

    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(
            f"{where} must be an (x, y) tuple of numpy arrays or a tf.data.Dataset of unbatched (x, y) "
            f"pairs; received {type(data).__name__}. Pass e.g. (task.x_train, task.y_train)."
        )
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(
            f"{where}: x and y must be arrays with a leading example axis; received shapes {x.shape} "
            f"and {y.shape}."
        )
    if len(x) != len(y):
        raise ValueError(
            f"{where}: x has {len(x)} examples but y has {len(y)}. Pass matching arrays (x, y)."
        )
    if len(x) == 0:
        raise ValueError(f"{where} is empty (0 examples). Pass at least batch_size={batch_size} examples.")
    if len(x) < batch_size:
        raise ValueError(
            f"{where} has {len(x)} examples, fewer than batch_size={batch_size}; with drop_remainder "
            "it would yield nothing. Lower batch_size or pass more examples."
        )
    # Shuffle indices, not images: cheap buffers, then gather whole batches.
    x_tensor, y_tensor = tf.constant(x), tf.constant(y)
    indices = tf.data.Dataset.range(len(x))
    if shuffle:
        indices = indices.shuffle(len(x), seed=seed + index, reshuffle_each_iteration=True)
    if repeat:
        indices = indices.repeat()
    indices = indices.batch(batch_size, drop_remainder=True)
    return indices.map(
        lambda batch: (tf.gather(x_tensor, batch), tf.gather(y_tensor, batch)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def multitask(
    *datasets: TaskData,
    batch_size: int = 128,
    shuffle: bool = True,
    seed: int = 0,
    repeat: bool = True,
) -> "tf.data.Dataset":
    """Zip one dataset per task into batches of ``((x_1, ..., x_T), (y_1, ..., y_T))``.

    Every step holds one full batch of every task (``drop_remainder=True``); each task is shuffled
    independently with seed ``seed + index``. Feed it straight to ``zipped.fit`` (a model with one input
    and one output per task, in the same order).

    Args:
        *datasets: per task, an ``(x, y)`` tuple of numpy arrays or a ``tf.data.Dataset`` of UNBATCHED
            ``(x, y)`` elements.
        batch_size: examples per task per step.
        shuffle: shuffle each task (reshuffled every pass).
        seed: base shuffle seed.
        repeat: repeat forever (pass ``steps_per_epoch`` to ``fit``); if False the dataset ends with the
            shortest task.

    Returns:
        A prefetched ``tf.data.Dataset``.

    Raises:
        ValueError: no datasets, a bad ``batch_size``, mismatched or empty arrays.
        TypeError: a dataset is neither a tuple nor a ``tf.data.Dataset``.

    Example:
        >>> a, b = make_task("classes_0_4"), make_task("classes_5_9")
        >>> ds = multitask(a.train, b.train, batch_size=32)
        >>> (xa, xb), (ya, yb) = next(iter(ds))
        >>> tuple(xa.shape), tuple(ya.shape)
        ((32, 28, 28, 1), (32,))
    """
    if not datasets:
        raise ValueError(
            "multitask needs at least one dataset; pass one (x, y) tuple or tf.data.Dataset per task, "
            "e.g. multitask(task_a.train, task_b.train)."
        )
    batch_size = _check_positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int; received seed={seed!r}.")
    per_task = tuple(
        _task_dataset(d, i, batch_size=batch_size, shuffle=shuffle, seed=int(seed), repeat=repeat)
        for i, d in enumerate(datasets)
    )
    zipped = tf.data.Dataset.zip(per_task)
    zipped = zipped.map(
        lambda *pairs: (tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return zipped.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------------------------
# Calibration inputs
# --------------------------------------------------------------------------------------------------


def _first_dim_unknown(spec: Any) -> bool:
    shape = getattr(spec, "shape", None)
    return shape is not None and shape.rank is not None and shape.rank > 0 and shape[0] is None


def as_inputs(
    data: Any,
    count: Optional[int] = None,
    *,
    batched: Optional[bool] = None,
) -> np.ndarray:
    """Return the inputs of ``data`` as one numpy array (labels dropped), e.g. for calibration.

    Accepts a numpy array (or anything ``np.asarray`` takes, such as a tensor), an ``(x, y)`` tuple of
    arrays, or a ``tf.data.Dataset`` whose elements are ``x`` or ``(x, y[, weights])``, batched or not.

    Args:
        data: the inputs, see above.
        count: keep at most this many examples (the first ones); None keeps all. Datasets are read only
            as far as needed, so an infinite dataset is fine with a ``count``.
        batched: whether dataset elements are batches. None infers it: batched when the element's first
            dimension is unknown (``ds.batch(n)``). A dataset batched with ``drop_remainder=True`` has a
            known first dimension, so pass ``batched=True`` for it.

    Returns:
        An array whose first axis indexes examples.

    Raises:
        ValueError: the data is empty, ``count`` is not a positive int, elements are dicts, the data
            is a generator or another one-pass iterator (not a ``tf.data`` dataset), or its values
            are not real numbers (object, complex, text dtypes).

    Example:
        >>> x = as_inputs(make_task("all").train, count=100)
        >>> x.shape
        (100, 28, 28, 1)
    """
    if count is not None:
        count = _check_positive_int(count, "count")
    if isinstance(data, tf.data.Dataset):
        array = _dataset_inputs(data, count, batched)
    else:
        if isinstance(data, (tuple, list)) and len(data) in (2, 3) and not np.isscalar(data[0]):
            data = data[0]  # (x, y) or (x, y, weights)
        if isinstance(data, dict):
            raise ValueError(
                "as_inputs received a dict; pass the input array itself (e.g. data['image'])."
            )
        array = to_array(data, "as_inputs")
        if array.ndim == 0:
            raise ValueError(
                f"as_inputs expects examples along the first axis; received a scalar {array!r}."
            )
        if count is not None:
            array = array[:count]
    if len(array) == 0:
        raise ValueError(
            "as_inputs found no examples in the data (0 inputs). Pass a non-empty array or dataset."
        )
    return require_real_numbers(array, "the data")


def _dataset_inputs(dataset: "tf.data.Dataset", count: Optional[int], batched: Optional[bool]) -> np.ndarray:
    array = np.concatenate(list(dataset_input_chunks(dataset, count, batched)), axis=0)
    return array[:count] if count is not None else array


def dataset_input_chunks(dataset: "tf.data.Dataset", count: Optional[int] = None, batched: Optional[bool] = None):
    """Yields the inputs of a ``tf.data`` dataset chunk by chunk (labels dropped, at most ``count``
    examples in all), reading it only as far as needed: :func:`as_inputs` without holding it whole.

    Example:
        >>> ds = tf.data.Dataset.from_tensor_slices(np.zeros((10, 2), np.float32)).batch(4)
        >>> [len(c) for c in dataset_input_chunks(ds, count=9)]
        [4, 4, 1]
    """
    spec = dataset.element_spec
    if isinstance(spec, dict):
        raise ValueError(
            f"as_inputs received a dataset of dicts ({sorted(spec)}); map it to inputs first, e.g. "
            "ds.map(lambda d: d['image'])."
        )
    paired = isinstance(spec, tuple)
    if paired:
        if not spec or isinstance(spec[0], (tuple, dict)):
            raise ValueError(
                f"as_inputs expects dataset elements x or (x, y); received {spec}. Map the dataset to "
                "one input tensor per element."
            )
        spec = spec[0]
    if batched is None:
        batched = _first_dim_unknown(spec)
    if count is None and int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            "as_inputs received an infinite dataset (it repeats forever) and no count; pass a limit "
            "(e.g. calibration_samples=10000) or a finite dataset."
        )
    if count is not None and not batched:
        dataset = dataset.take(count)
    total = 0
    for element in dataset.as_numpy_iterator():
        x = element[0] if paired else element
        x = np.asarray(x)
        chunk = x if batched else x[np.newaxis]
        if count is not None:
            chunk = chunk[: count - total]
        total += len(chunk)
        yield chunk
        if count is not None and total >= count:
            break
    if total == 0:
        raise ValueError("as_inputs found no examples: the dataset is empty. Pass a non-empty dataset.")
