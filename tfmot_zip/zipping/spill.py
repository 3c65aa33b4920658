"""Where a zip keeps the activations it caches: in memory up to a limit, in temporary files beyond.

A zip measures every layer's inputs on the whole calibration set, and :class:`~tfmot_zip.zipping.
activations.ActivationCache` keeps those values between stages so that no layer runs twice. Those
values grow with the number of calibration images (a ResNet50 stage on 2,048 images of 32x32 is
134 MB per tensor and task). :class:`SpillPolicy` bounds the memory they take: a value is kept in
memory while the values held stay under ``memory_bytes``; beyond it the value is written to a
temporary file and read back by sample ranges (:class:`SpilledArray`), which is all the zip's
consumers need (Hessian rows, patch rows, least-squares blocks and moments are accumulated batch by
batch). Layers run on at most ``batch_bytes`` of inputs and outputs at a time, so no step needs
the whole calibration set in memory at once.

The files live in one temporary directory per policy (under ``TMPDIR``), are deleted as soon as no
layer will read them, and the directory is removed by :meth:`SpillPolicy.close` (``zip_models``
calls it when the zip ends, even on error) or, failing that, when the policy is garbage collected.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import weakref
from typing import Any

import numpy as np

__all__ = ["ALIGNMENT", "FREE_BYTES_UNLIMITED", "SpillPolicy", "SpilledArray", "as_array", "default_batch_bytes", "nbytes", "sample_bytes"]

# Released value buffers a policy without a memory limit keeps for reuse (see SpillPolicy.empty).
FREE_BYTES_UNLIMITED = 512 << 20
# Byte alignment of the arrays :meth:`SpillPolicy.empty` makes: TensorFlow can read 64-byte aligned
# memory in place (tfmot_zip.zipping.activations.shared_tensor); it copies every other array.
ALIGNMENT = 64


def sample_bytes(value: Any) -> int:
    """Bytes one sample of a value takes (a numpy array, a tf tensor, a :class:`SpilledArray` or a
    symbolic Keras tensor, whose unknown sizes count as 1).

    Example:
        >>> sample_bytes(np.zeros((4, 3), np.float32))
        12
    """
    dims = [d if isinstance(d, (int, np.integer)) else 1 for d in list(value.shape)[1:]]
    return int(np.prod(dims)) * np.dtype(getattr(value.dtype, "as_numpy_dtype", value.dtype)).itemsize


def nbytes(value: Any) -> int:
    """Bytes a cached value holds (a numpy array, a tf tensor or a :class:`SpilledArray`).

    Example:
        >>> nbytes(np.zeros((4, 3), np.float32))
        48
    """
    return int(value.shape[0]) * sample_bytes(value)


def as_array(value: Any):
    """``value`` as something numpy reads: a :class:`SpilledArray` stays one (read by ranges),
    anything else becomes a numpy array.

    Example:
        >>> as_array([1.0, 2.0]).shape
        (2,)
    """
    return value if isinstance(value, SpilledArray) else np.asarray(value)


class SpilledArray:
    """A read-only array stored in a file, read back by sample ranges (``x[a:b]``) or whole.

    Args:
        path: the file (raw C-order values, no header).
        shape: the array's shape (samples first).
        dtype: its numpy dtype.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> np.arange(12, dtype=np.float32).reshape(4, 3).tofile(path)
        >>> x = SpilledArray(path, (4, 3), np.float32)
        >>> x[1:3]
        array([[3., 4., 5.],
               [6., 7., 8.]], dtype=float32)
        >>> len(x), x.shape, float(np.asarray(x).sum())
        (4, (4, 3), 66.0)
        >>> x.delete()
    """

    def __init__(self, path: str, shape: tuple, dtype: Any):
        self.path = path
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._row = int(np.prod(self.shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            return self[key[0]][(slice(None),) + key[1:]] if isinstance(key[0], slice) else self[key[0]][key[1:]]
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"index {key} is out of range for {len(self)} samples")
            return self[index : index + 1][0]
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"A SpilledArray reads sample ranges (x[a:b]) or single samples; received {key!r}.")
        start, stop, _ = key.indices(len(self))
        count = max(0, stop - start)
        if count == 0:
            return np.empty((0,) + self.shape[1:], self.dtype)
        values = np.fromfile(self.path, dtype=self.dtype, count=count * self._row, offset=start * self._row * self.dtype.itemsize)
        return values.reshape((count,) + self.shape[1:])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[:]
        return values if dtype is None else values.astype(dtype, copy=False)

    def delete(self) -> None:
        """Removes the file (reading afterwards fails)."""
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return f"SpilledArray(shape={self.shape}, dtype={self.dtype.name}, path={self.path!r})"


class _Writer:
    """Collects a value batch by batch, in memory or in a file (see :meth:`SpillPolicy.writer`)."""

    def __init__(self, policy: "SpillPolicy", path: str | None, reserved: int = 0):
        self.policy, self.path, self.reserved = policy, path, reserved
        self.chunks: list[np.ndarray] = []
        self.buffer: np.ndarray | None = None  # the whole value, filled batch by batch (see _start_buffer)
        self.rows, self.tail, self.dtype = 0, None, None
        self._file = open(path, "wb") if path is not None else None

    def append(self, chunk: Any) -> None:
        if self._file is None and self.buffer is None and not self.chunks and self._start_buffer(chunk):
            return
        if self.buffer is not None:
            rows = len(chunk)
            if self.rows + rows <= len(self.buffer):
                self.buffer[self.rows : self.rows + rows] = chunk  # one copy, into reused memory
                self.rows += rows
                return
            self.chunks, self.buffer = [self.buffer[: self.rows]], None  # more rows than announced
        if self._file is not None or not hasattr(chunk, "numpy"):
            chunk = np.asarray(chunk)
        elif self.chunks:
            # A value of several batches is gathered in numpy: TensorFlow's pooled allocator (oneDNN's)
            # keeps its high-water mark for good, so batches piling up there would raise the peak of
            # the whole zip. A value of one batch stays a tf tensor (the next layer reads it as is).
            self.chunks = [np.array(c) if hasattr(c, "numpy") else c for c in self.chunks]
            chunk = np.array(chunk)
        if len(chunk) == 0 and self.dtype is not None:
            return  # a batch past the end of a shorter input: nothing to add (its shape may be degenerate)
        self.rows += len(chunk)
        self.tail = tuple(int(d) for d in chunk.shape[1:])
        self.dtype = np.dtype(getattr(chunk.dtype, "as_numpy_dtype", chunk.dtype))
        if self._file is not None:
            np.ascontiguousarray(chunk).tofile(self._file)
        else:
            self.chunks.append(chunk)

    def _start_buffer(self, chunk: Any) -> bool:
        """For a value announced larger than its first batch: the whole value's array, taken from the
        policy's free buffers (memory already mapped) and filled batch by batch (one copy per batch,
        no concatenation). Returns whether it did."""
        tail = tuple(int(d) for d in chunk.shape[1:])
        dtype = np.dtype(getattr(chunk.dtype, "as_numpy_dtype", chunk.dtype))
        row = int(np.prod(tail)) * dtype.itemsize
        rows = self.reserved // row if row else 0
        if len(chunk) == 0 or rows <= len(chunk) or rows * row != self.reserved:
            return False
        self.buffer = self.policy.empty((rows,) + tail, dtype)
        self.tail, self.dtype = tail, dtype
        self.buffer[: len(chunk)] = chunk
        self.rows = len(chunk)
        return True

    def discard(self) -> None:
        """Drops what was written (its file, or its reservation of the memory limit)."""
        self.chunks = []
        if self.buffer is not None:
            self.policy.recycle(self.buffer)
            self.buffer = None
        if self._file is not None:
            self._file.close()
            os.remove(self.path)
        else:
            self.policy.held -= self.reserved
        self.reserved = 0

    def finish(self):
        if self._file is None and self.buffer is not None:
            value = self.buffer if self.rows == len(self.buffer) else self.buffer[: self.rows]
            self.buffer = None
            self.policy.held -= self.reserved
            kept = self.policy.keep(value)
            if kept is not value:  # written to a file after all
                self.policy.recycle(value)
            return kept
        if self._file is None:
            chunks = [c for c in self.chunks if len(c)] or self.chunks[:1]
            value = np.concatenate(chunks, 0) if len(chunks) != 1 else chunks[0]
            self.chunks = []
            self.policy.held -= self.reserved  # the reservation becomes the value (spilled if it outgrew it)
            return self.policy.keep(value)
        self._file.close()
        self.policy.spilled_bytes += self.rows * int(np.prod(self.tail)) * self.dtype.itemsize
        self.policy.spilled_values += 1
        return SpilledArray(self.path, (self.rows,) + tuple(self.tail), self.dtype)


class SpillPolicy:
    """Keeps cached values in memory up to ``memory_bytes`` in all, and the rest in temporary files.

    Args:
        memory_bytes: bytes of values held in memory at most (None: no limit, nothing spills).
        batch_bytes: bytes of inputs and outputs one batched layer call handles (see the module doc);
            None: :func:`default_batch_bytes` of ``memory_bytes``.
        directory: where the temporary directory goes (None: the system's, ``TMPDIR``).
        small_pages: until :meth:`close`, numpy backs new large arrays with the kernel's ordinary pages
            rather than asking for transparent huge pages (``zip_models`` sets it; see
            :func:`_set_huge_pages`). The setting numpy had is restored by ``close``.

    Example:
        >>> policy = SpillPolicy(memory_bytes=100)
        >>> small = policy.keep(np.zeros(10, np.float32))       # 40 bytes: kept in memory
        >>> large = policy.keep(np.ones((30, 2), np.float32))   # 240 bytes: beyond the limit
        >>> type(small).__name__, type(large).__name__, policy.held
        ('ndarray', 'SpilledArray', 40)
        >>> float(large[:5].sum())
        10.0
        >>> policy.close()
        >>> os.path.exists(large.path)
        False
    """

    def __init__(self, memory_bytes: int | None = None, batch_bytes: int | None = None, directory: str | None = None,
                 small_pages: bool = False):
        for name, value in (("memory_bytes", memory_bytes), ("batch_bytes", batch_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer (bytes) or None; received {value!r}.")
        if batch_bytes is None:
            batch_bytes = default_batch_bytes(memory_bytes)
        if batch_bytes < 1:
            raise ValueError(f"batch_bytes must be at least 1; received {batch_bytes!r}.")
        self.memory_bytes = None if memory_bytes is None else int(memory_bytes)
        self.batch_bytes = int(batch_bytes)
        self.directory = directory
        self.held = 0  # bytes of values in memory now
        self.peak_held = 0
        self.spilled_bytes = 0  # bytes written to files so far
        self.spilled_values = 0
        self._free: list[np.ndarray] = []  # released buffers of values, to fill again (see empty)
        self._issued: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id -> buffer handed out
        self._dir: str | None = None
        self._count = 0
        self._finalizer = None
        self._pages = _set_huge_pages(False) if small_pages else None  # numpy's setting before, to restore

    def _fits(self, size: int) -> bool:
        return self.memory_bytes is None or self.held + size <= self.memory_bytes

    def _new_path(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="tfmot_zip_activations_", dir=self.directory)
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._count += 1
        return os.path.join(self._dir, f"{self._count}.bin")

    def keep(self, value: Any):
        """``value`` held in memory if it fits under the limit, else written to a file (a SpilledArray)."""
        size = nbytes(value)
        if self._fits(size):
            self.held += size
            self.peak_held = max(self.peak_held, self.held)
            self._trim_free()
            return value
        writer = _Writer(self, self._new_path())
        writer.append(value)
        return writer.finish()

    def writer(self, expected_bytes: int) -> _Writer:
        """A writer for a value of about ``expected_bytes``, built batch by batch; ``finish()`` returns it.

        A value that fits reserves its share of the limit now, so writers open side by side (a
        layer with several outputs) cannot together exceed it."""
        if self._fits(expected_bytes):
            self.held += expected_bytes
            self.peak_held = max(self.peak_held, self.held)
            self._trim_free()
            return _Writer(self, None, reserved=expected_bytes)
        return _Writer(self, self._new_path())

    def release(self, value: Any) -> None:
        """Forgets a value this policy stored (deletes its file, or frees its share of the limit; an
        array made by :meth:`empty` goes back to the free buffers)."""
        if isinstance(value, SpilledArray):
            value.delete()
            return
        self.held = max(0, self.held - nbytes(value))
        if isinstance(value, np.ndarray):
            self.recycle(value)

    def empty(self, shape: tuple, dtype: Any) -> np.ndarray:
        """An uninitialised array for a value, in a released buffer of the same size when one is free
        and nothing else refers to it, else newly allocated.

        Filling memory the process already has costs no page faults; on a kernel that backs numpy's
        large arrays with huge pages, a new allocation can also wait for the kernel to compact memory
        (measured: 1.3 s for one 188 MB array on a machine with fragmented memory, against 0.02 s).

        Example:
            >>> policy = SpillPolicy()
            >>> a = policy.empty((4, 3), np.float32)
            >>> address = a.ctypes.data
            >>> policy.release(a)
            >>> del a
            >>> b = policy.empty((3, 4), np.float32)  # same size, nothing else refers to it: reused
            >>> b.ctypes.data == address
            True
            >>> policy.release(b)
            >>> c = policy.empty((4, 3), np.float32)  # b still refers to it: new memory
            >>> bool(np.shares_memory(b, c))
            False
        """
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        for i in range(len(self._free)):
            # references: the free list and getrefcount's argument (no view of it anywhere else)
            if self._free[i].nbytes == size + ALIGNMENT and sys.getrefcount(self._free[i]) <= 2:
                buffer = self._free.pop(i)
                break
        else:
            buffer = np.empty(size + ALIGNMENT, np.uint8)
        self._issued[id(buffer)] = buffer
        start = -buffer.ctypes.data % ALIGNMENT  # aligned: TensorFlow reads the array in place
        return buffer[start : start + size].view(dtype).reshape(shape)

    def recycle(self, array: np.ndarray) -> None:
        """Returns the buffer of an array made by :meth:`empty` to the free buffers (anything else is
        ignored). Free buffers count against the memory limit with the values held: the oldest are
        dropped first (without a limit, at most :data:`FREE_BYTES_UNLIMITED` are kept).

        Example:
            >>> policy = SpillPolicy(memory_bytes=256)
            >>> policy.recycle(policy.empty((4, 2), np.float32))  # 32 bytes (96 with the alignment slack): kept
            >>> policy.recycle(np.zeros(8, np.float32))           # not the policy's: ignored
            >>> [b.nbytes for b in policy._free]
            [96]
            >>> policy.recycle(policy.empty((80,), np.float32))   # 384 bytes: could never be kept, dropped
            >>> [b.nbytes for b in policy._free]
            [96]
        """
        root = array
        while isinstance(root.base, np.ndarray):
            root = root.base
        if self._issued.get(id(root)) is not root:
            return
        del self._issued[id(root)]
        if root.nbytes <= self._free_limit():  # one that could never be kept does not push out the others
            self._free.append(root)
            self._trim_free()

    def _free_limit(self) -> int:
        return max(0, FREE_BYTES_UNLIMITED if self.memory_bytes is None else self.memory_bytes - self.held)

    def _trim_free(self) -> None:
        while self._free and sum(b.nbytes for b in self._free) > self._free_limit():
            self._free.pop(0)

    def summary(self) -> dict:
        """What the policy did, in MB: ``{"memory_limit_mb", "peak_in_memory_mb", "spilled_mb", "spilled_values"}``.

        Example:
            >>> SpillPolicy(memory_bytes=2**20).summary()
            {'memory_limit_mb': 1.0, 'peak_in_memory_mb': 0.0, 'spilled_mb': 0.0, 'spilled_values': 0}
        """
        mb = lambda b: round(b / 2**20, 1)  # noqa: E731
        return {"memory_limit_mb": None if self.memory_bytes is None else mb(self.memory_bytes),
                "peak_in_memory_mb": mb(self.peak_held), "spilled_mb": mb(self.spilled_bytes),
                "spilled_values": int(self.spilled_values)}

    def close(self) -> None:
        """Deletes every file this policy wrote (values read from them afterwards are gone)."""
        self._free = []
        if self._pages is not None:
            _set_huge_pages(self._pages)
            self._pages = None
        if self._finalizer is not None:
            self._finalizer()
        self._dir = None


def default_batch_bytes(memory_bytes: int | None) -> int:
    """Bytes of inputs and outputs a layer call handles by default: an eighth of the memory limit,
    between 4 MB and 128 MB (128 MB without a limit).

    TensorFlow's CPU allocator keeps the memory of its largest calls for the rest of the process, so
    calls of a bounded size keep the zip's peak independent of the number of calibration samples
    (the ResNet50 pair, 2,048 images per task against 256: +1.1% with 32 MB calls, +19.9% with
    128 MB; docs/ZIP_COST.md); raising ``activation_memory_mb`` buys larger, faster calls.

    Example:
        >>> default_batch_bytes(256 << 20) >> 20, default_batch_bytes(None) >> 20, default_batch_bytes(0) >> 20
        (32, 128, 4)
    """
    if memory_bytes is None:
        return 128 << 20
    return int(min(128 << 20, max(4 << 20, memory_bytes // 8)))


def _set_huge_pages(enabled: bool) -> bool | None:
    """Sets whether numpy asks the kernel for transparent huge pages (``madvise``) for its large
    arrays; returns the previous setting, or None when numpy has no such setting or the user chose it
    with ``NUMPY_MADVISE_HUGEPAGE`` (then it is left alone).

    On a virtual machine whose free memory is handed back to the host, every new huge page is a
    fault in the host: a zip allocating fresh arrays then spends seconds in page faults (three LeNet-5
    at 10,000 images per task: 6.0-7.2 s with huge pages, 4.7-5.1 s without, measured side by side;
    docs/ZIP_COST.md). Ordinary pages come from memory the guest freed recently.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return None
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    setter = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    return None if setter is None else bool(setter(bool(enabled)))
