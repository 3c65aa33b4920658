"""What a benchmark run stands on: versions, machine, CPU time, and whether ResNet-20 zips.

Example:
    >>> from benchmarks.environment import machine_info
    >>> machine_info()["cores"] >= 1
    True
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["versions", "machine_info", "cpu_seconds", "probe_resnet"]


def _git_state() -> Optional[str]:
    """Commit of the working tree, with ``+dirty`` when the package has uncommitted changes."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "tfmot_zip"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")



def versions() -> dict:
    """Versions of the stack that produced the figures (:func:`tfmot_zip.io.versions`) and the git commit.

    Example:
        >>> from benchmarks.environment import versions
        >>> {"tensorflow", "numpy", "git"} <= set(versions())
        True
    """
    from tfmot_zip.io import versions as stack_versions

    return {**stack_versions(), "git": _git_state()}


def machine_info() -> dict:
    """CPU model, core count, OS and the load average (the machine is shared: load matters).

    Example:
        >>> from benchmarks.environment import machine_info
        >>> sorted(machine_info())[:2]
        ['cores', 'cpu']
    """
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "load_average_1_5_15": load,
        "nice": os.nice(0) if hasattr(os, "nice") else None,
    }


def probe_resnet() -> dict:
    """Whether ``zip_models`` zips two (tiny, untrained) ResNet-20 and keeps them exact at sharing 0.

    Returns ``{"supported": bool, "error": str | None, "seconds": float}``; the error is the
    library's message when it refuses or fails.

    Zipping two ResNet-20 takes seconds, so ``benchmarks/run.py`` calls it once per run.
    """
    import tfmot_zip
    from tfmot_zip.apps import zoo
    from tfmot_zip.compat import keras

    start = time.perf_counter()
    try:
        keras.utils.set_random_seed(0)
        models = [zoo.resnet20(num_classes=2, input_shape=(8, 8, 1), name=f"probe_{i}") for i in range(2)]
        x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
        exact = tfmot_zip.zip_models(*models, calibration_data=(x, x), sharing=0.0)
        outputs = exact([x, x], training=False)
        error = max(float(np.max(np.abs(np.asarray(o) - m(x, training=False).numpy()))) for o, m in zip(outputs, models))
        if error > 1e-4:
            raise AssertionError(f"sharing=0 changes the outputs by {error:.3g}")
        full = tfmot_zip.zip_models(*models, calibration_data=(x, x), sharing=1.0)
        if len(full.outputs) != 2:
            raise AssertionError(f"expected 2 outputs, got {len(full.outputs)}")
        return {"supported": True, "error": None, "seconds": round(time.perf_counter() - start, 2)}
    except Exception as err:  # noqa: BLE001 - any failure means "not supported"; the message is kept
        return {
            "supported": False,
            "error": f"{type(err).__name__}: {err}",
            "seconds": round(time.perf_counter() - start, 2),
        }


def cpu_seconds() -> float:
    """CPU time of this process (user + system, all threads): comparable across machine loads.

    Example:
        >>> from benchmarks.environment import cpu_seconds
        >>> cpu_seconds() > 0
        True
    """
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

