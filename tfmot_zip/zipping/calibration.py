"""Calibration inputs of a zip, checked: numpy arrays as given, ``tf.data`` datasets streamed
batch by batch into the zip's :class:`~tfmot_zip.zipping.spill.SpillPolicy` (a temporary file once
they outgrow its memory limit), so a calibration set need not fit in memory.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tfmot_zip.compat import tf
from tfmot_zip.zipping.spill import SpillPolicy

__all__ = ["as_calibration"]


def as_calibration(data: Any, argument: str, shape: tuple, limit: int | None, storage: SpillPolicy | None = None):
    """One model's calibration inputs, checked: a numpy array, or (a ``tf.data`` dataset streamed
    into ``storage`` that outgrew its memory limit) a :class:`~tfmot_zip.zipping.spill.SpilledArray`.

    Args:
        data: a numpy array (or ``(x, y)``), or a ``tf.data`` dataset of inputs or ``(inputs, labels)``.
        argument: how the caller names it in messages (e.g. ``"calibration_data[1]"``).
        shape: the model's input shape without the batch axis.
        limit: at most this many samples (None: all).
        storage: where a dataset is streamed to (None: it is read into memory whole).

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import tf
        >>> ds = tf.data.Dataset.from_tensor_slices(np.ones((10, 3), np.float32)).batch(4)
        >>> policy = SpillPolicy(memory_bytes=0)
        >>> x = as_calibration(ds, "calibration_data[0]", (3,), limit=6, storage=policy)
        >>> type(x).__name__, x.shape
        ('SpilledArray', (6, 3))
        >>> policy.close()
    """
    from tfmot_zip.data.checks import check_inputs, require_finite, require_real_numbers, warn_if_unscaled
    from tfmot_zip.data.tasks import as_inputs, dataset_input_chunks

    def check_shape(x) -> None:
        if tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"{argument} has samples of shape {tuple(x.shape[1:])}, but the model input is {shape}. "
                "Pass inputs of the model's input shape (labels are ignored)."
            )

    if storage is not None and isinstance(data, tf.data.Dataset):  # streamed: never whole in memory
        sample = int(np.prod(shape)) * 4
        known = limit if limit is not None else (int(data.cardinality()) * 64 if int(data.cardinality()) >= 0 else None)
        expected = sample * known if known is not None else 2**62  # unknown length: straight to a file
        writer = storage.writer(expected)
        try:
            for i, chunk in enumerate(dataset_input_chunks(data, count=limit)):
                check_shape(chunk)
                chunk = require_real_numbers(chunk, argument)
                require_finite(chunk, f"{argument} (a batch of {len(chunk)} samples)")
                if i == 0:
                    warn_if_unscaled(chunk, argument)
                writer.append(chunk.astype(np.float32, copy=False))
        except ValueError as err:
            writer.discard()
            raise ValueError(f"{argument}: {err}" if not str(err).startswith(argument) else str(err)) from None
        return writer.finish()
    try:
        x = as_inputs(data, count=limit)
    except ValueError as err:
        raise ValueError(f"{argument}: {err}") from None
    x = np.asarray(x)
    check_shape(x)
    if x.shape[0] == 0:
        raise ValueError(f"{argument} is empty; pass at least one calibration sample per model.")
    check_inputs(x, argument)  # NaN/inf counted and refused; unscaled integers warned (data.checks)
    return x.astype(np.float32, copy=False)
