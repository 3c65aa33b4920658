"""A tensorflow-datasets builder for Fashion-MNIST that reads the local Debian files (no download).

Kept apart from :mod:`tfmot_zip.data.fashion_mnist` because defining the class imports tensorflow_datasets (and
registers the name ``local_fashion_mnist`` with tfds); :func:`load_tfds` reads the dataset through it.

Example:
    >>> from tfmot_zip.data.tfds_builder import LocalFashionMnist
    >>> import tempfile
    >>> builder = LocalFashionMnist(data_dir=tempfile.mkdtemp())
    >>> builder.name, builder.info.features["image"].shape
    ('local_fashion_mnist', (28, 28, 1))

    ``builder.download_and_prepare()`` then encodes the local files (about half a minute, no
    download) and ``builder.as_dataset(split="test", as_supervised=True)`` reads them.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from tfmot_zip.compat import tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before tfds imports TF)
from tfmot_zip.data.fashion_mnist import (
    CLASS_NAMES,
    IMAGE_SHAPE,
    PathLike,
    default_cache_dir,
    fashion_mnist_dir,
    fashion_mnist_files,
    load_fashion_mnist_uint8,
)

import tensorflow_datasets as tfds  # noqa: E402  (needs the importlib_resources package)

__all__ = ["LocalFashionMnist", "load_tfds"]

_DESCRIPTION = (
    "Fashion-MNIST (Zalando article images, 60,000 train / 10,000 test, 28x28 grayscale, 10 classes), "
    "read from the local idx files of the Debian package dataset-fashion-mnist instead of downloaded."
)
_CITATION = """\
@article{DBLP:journals/corr/abs-1708-07747,
  author  = {Han Xiao and Kashif Rasul and Roland Vollgraf},
  title   = {Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms},
  journal = {CoRR},
  volume  = {abs/1708.07747},
  year    = {2017},
  url     = {http://arxiv.org/abs/1708.07747},
}
"""


class LocalFashionMnist(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST built from local idx files; ``_split_generators`` never downloads.

    Args:
        source_dir: folder with the four idx ``.gz`` files; defaults to
            ``$TFMOT_ZIP_FASHION_MNIST_DIR`` or ``/usr/share/datasets/fashion-mnist``.
        **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``, ``file_format``, ...).

    Example:
        >>> builder = LocalFashionMnist(data_dir="/tmp/tfds")
        >>> builder.info.features["label"].num_classes
        10
    """

    name = "local_fashion_mnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: local Debian idx files."}

    def __init__(self, *, source_dir: PathLike | None = None, **kwargs) -> None:
        # Set before super().__init__, which already builds the DatasetInfo.
        self._source_dir = fashion_mnist_dir(source_dir)
        super().__init__(**kwargs)

    @property
    def source_dir(self) -> str:
        """The folder the examples are read from."""
        return os.fspath(self._source_dir)

    def _info(self) -> "tfds.core.DatasetInfo":
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the idx file order (example i of a split is image i of the file), like the numpy
            # loader; shuffle in the input pipeline instead.
            disable_shuffling=True,
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):  # noqa: ARG002 - nothing to download
        generators = {}
        for split in ("train", "test"):
            fashion_mnist_files(split, self._source_dir)  # clear FileNotFoundError when missing
            generators[split] = self._generate_examples(split)
        return generators

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        images, labels = load_fashion_mnist_uint8(split, self._source_dir)
        for index in range(len(labels)):
            yield index, {"image": images[index], "label": int(labels[index])}


def load_tfds(
    split: str,
    data_dir: PathLike | None = None,
    as_supervised: bool = True,
    *,
    source_dir: PathLike | None = None,
    shuffle_files: bool = False,
) -> "tf.data.Dataset":
    """Fashion-MNIST as a ``tf.data.Dataset`` through the local tensorflow-datasets builder.

    The first call prepares the dataset (encodes the 70,000 images into TFRecords under ``data_dir``;
    about half a minute on 2 cores); later calls read the prepared files. Nothing is downloaded.

    Args:
        split: any tfds split expression over "train" and "test" (e.g. "test", "train[:10%]").
        data_dir: where tfds keeps the prepared data; defaults to ``<cache>/tensorflow_datasets`` with
            ``<cache>`` from :func:`default_cache_dir`.
        as_supervised: yield ``(image, label)`` tuples instead of ``{"image", "label"}`` dicts.
        source_dir: folder with the idx files (see :func:`fashion_mnist_dir`).
        shuffle_files: passed to ``builder.as_dataset``.

    Returns:
        Unbatched dataset of uint8 images (28, 28, 1) and int64 labels.

    Raises:
        FileNotFoundError: the idx files are missing; the message names the install command.

    Note:
        The prepared files are keyed by builder version only: after pointing ``source_dir`` at
        different files, use a fresh ``data_dir``.

    Example:
        ``ds = load_tfds("test"); image, label = next(iter(ds))`` gives a (28, 28, 1) uint8
        image (tested in ``tests/data/test_datasets.py``: the first call prepares the files).
    """
    if data_dir is None:
        data_dir = default_cache_dir() / "tensorflow_datasets"
    builder = LocalFashionMnist(data_dir=os.fspath(data_dir), source_dir=source_dir)
    builder.download_and_prepare()
    return builder.as_dataset(split=split, as_supervised=as_supervised, shuffle_files=shuffle_files)
