"""Fashion-MNIST from local files: a fast numpy loader and a tensorflow-datasets builder.

Nothing here downloads. The data comes from the Debian package ``dataset-fashion-mnist``, which installs
the four standard idx files in ``/usr/share/datasets/fashion-mnist/``::

    sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist

Point ``TFMOT_ZIP_FASHION_MNIST_DIR`` (or the ``data_dir`` argument) at another folder holding the same
four files to use a copy elsewhere.

Importing this module is cheap: TensorFlow and tensorflow-datasets are imported only by
:func:`tfmot_zip.data.tfds_builder.load_tfds`.

Example:
    >>> from tfmot_zip.data import fashion_mnist as datasets
    >>> x, y = datasets.load_fashion_mnist("test")
    >>> x.shape, x.dtype, y.dtype
    ((10000, 28, 28, 1), dtype('float32'), dtype('int64'))
"""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tfmot_zip.compat import tf

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_DIR",
    "FILENAMES",
    "INSTALL_COMMAND",
    "NUM_EXAMPLES",
    "SPLITS",
    "default_cache_dir",
    "fashion_mnist_dir",
    "fashion_mnist_files",
    "load_fashion_mnist",
    "read_idx",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Where the Debian package ``dataset-fashion-mnist`` installs the idx files.
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: Environment variable that overrides :data:`DEFAULT_FASHION_MNIST_DIR`.
FASHION_MNIST_DIR_ENV = "TFMOT_ZIP_FASHION_MNIST_DIR"
#: The folder used when no ``data_dir`` is given (read from the environment at import time;
#: :func:`fashion_mnist_dir` re-reads it at call time).
FASHION_MNIST_DIR = os.environ.get(FASHION_MNIST_DIR_ENV) or DEFAULT_FASHION_MNIST_DIR
#: Environment variable for the tfmot_zip cache (prepared tfds data, trained zoo models).
CACHE_DIR_ENV = "TFMOT_ZIP_CACHE"

INSTALL_COMMAND = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"

#: The class names of Fashion-MNIST, indexed by label.
CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

SPLITS = ("train", "test")
#: (images file, labels file) per split.
FILENAMES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
NUM_EXAMPLES = {"train": 60000, "test": 10000}
IMAGE_SHAPE = (28, 28, 1)

# idx type codes (third byte of the magic number) -> numpy dtype (big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def default_cache_dir() -> Path:
    """The tfmot_zip cache folder: ``$TFMOT_ZIP_CACHE`` if set, else ``~/.cache/tfmot_zip``.

    Example:
        >>> import os
        >>> os.environ["TFMOT_ZIP_CACHE"] = "/tmp/tfmot_zip_cache"
        >>> str(default_cache_dir())
        '/tmp/tfmot_zip_cache'
        >>> del os.environ["TFMOT_ZIP_CACHE"]
    """
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tfmot_zip"


def fashion_mnist_dir(data_dir: PathLike | None = None) -> Path:
    """Resolve the folder holding the Fashion-MNIST idx files.

    Order: the ``data_dir`` argument, then ``$TFMOT_ZIP_FASHION_MNIST_DIR`` (read now), then
    ``/usr/share/datasets/fashion-mnist``.

    Example:
        >>> str(fashion_mnist_dir("/tmp/fm"))
        '/tmp/fm'
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV) or DEFAULT_FASHION_MNIST_DIR)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(
            f"Unknown Fashion-MNIST split: split={split!r}. Use one of {', '.join(map(repr, SPLITS))}."
        )
    return split


def _missing_file_error(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"Fashion-MNIST file not found: {path}. Install the Debian package that provides it with "
        f"`{INSTALL_COMMAND}`, or set {FASHION_MNIST_DIR_ENV} (or pass data_dir) to a folder holding "
        f"{', '.join(FILENAMES['train'] + FILENAMES['test'])}."
    )


def fashion_mnist_files(split: str, data_dir: PathLike | None = None) -> tuple[Path, Path]:
    """Return the (images, labels) idx file paths of ``split``, checking that both exist.

    Raises:
        ValueError: ``split`` is not "train" or "test".
        FileNotFoundError: a file is missing; the message names it and the install command.

    Example:
        >>> images, labels = fashion_mnist_files("test")
        >>> images.name
        't10k-images-idx3-ubyte.gz'
    """
    _check_split(split)
    folder = fashion_mnist_dir(data_dir)
    paths = tuple(folder / name for name in FILENAMES[split])
    for path in paths:
        if not path.is_file():
            raise _missing_file_error(path)
    return paths  # type: ignore[return-value]


def read_idx(path: PathLike) -> np.ndarray:
    """Read one idx file (optionally gzipped) into a numpy array in native byte order.

    Raises:
        ValueError: the file is not a well-formed idx file.

    Example:
        >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
        >>> labels.shape
        (10000,)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path} is not an idx file (magic bytes {raw[:4]!r}). Re-install the data with "
            f"`{INSTALL_COMMAND}`."
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes of data) but "
            f"the file holds {len(raw) - header_end} bytes. Re-install the data with `{INSTALL_COMMAND}`."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False)


@functools.lru_cache(maxsize=8)
def _load_raw(split: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """Cached uint8 images (N, 28, 28) and int64 labels (N,), both read-only."""
    images_path, labels_path = fashion_mnist_files(split, folder)
    images = read_idx(images_path)
    labels = read_idx(labels_path).astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[:2] or labels.shape != images.shape[:1]:
        raise ValueError(
            f"Unexpected Fashion-MNIST shapes in {folder}: images {images.shape}, labels {labels.shape}; "
            f"expected (N, 28, 28) and (N,). Re-install the data with `{INSTALL_COMMAND}`."
        )
    images = np.ascontiguousarray(images)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


@functools.lru_cache(maxsize=8)
def _load_float(split: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _load_raw(split, folder)
    x = (images.astype(np.float32) / np.float32(255.0)).reshape(images.shape + (1,))
    x.flags.writeable = False
    return x, labels


def load_fashion_mnist(
    split: str = "train", data_dir: PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split from the local idx files as numpy arrays.

    The result is cached in-process, so repeated calls return the same (read-only) arrays at no cost.
    Copy them (``x.copy()``) before modifying them in place.

    Args:
        split: "train" (60,000 examples) or "test" (10,000 examples).
        data_dir: folder with the idx files; defaults to ``$TFMOT_ZIP_FASHION_MNIST_DIR`` or
            ``/usr/share/datasets/fashion-mnist``.

    Returns:
        ``(images, labels)``: float32 images in [0, 1] of shape (N, 28, 28, 1) and int64 labels in 0..9.

    Raises:
        ValueError: ``split`` is not "train" or "test".
        FileNotFoundError: the files are missing; the message names the install command.

    Example:
        >>> x, y = load_fashion_mnist("test")
        >>> x.shape, float(x.max()) <= 1.0, int(y.max())
        ((10000, 28, 28, 1), True, 9)
    """
    _check_split(split)
    folder = str(fashion_mnist_dir(data_dir).resolve())
    return _load_float(split, folder)


def load_fashion_mnist_uint8(
    split: str = "train", data_dir: PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`load_fashion_mnist` but returns the raw uint8 images of shape (N, 28, 28, 1).

    Example:
        >>> x, y = load_fashion_mnist_uint8("test")
        >>> x.dtype, x.shape
        (dtype('uint8'), (10000, 28, 28, 1))
    """
    _check_split(split)
    folder = str(fashion_mnist_dir(data_dir).resolve())
    images, labels = _load_raw(split, folder)
    return images.reshape(images.shape + (1,)), labels
