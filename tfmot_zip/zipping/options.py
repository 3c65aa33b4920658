"""The options of one zip (:class:`ZipOptions`): checked once, serialisable, used unchanged by
one-shot zipping and by :class:`~tfmot_zip.zipping.callbacks.ZipCallback`.

A scheduled zip stores the whole options object in the config of every zip layer it schedules, so
a ``.keras`` file saved mid-schedule resumes with exactly the options it was started with.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfmot_zip.core.head_fit import HEAD_FITS
from tfmot_zip.core.selection import SELECTORS
from tfmot_zip.core.strategies import STRATEGIES

__all__ = ["ZipOptions", "MERGED_HESSIANS", "CONV_HESSIANS", "RECIPES", "DEFAULT_METHOD", "resolve_method"]

MERGED_HESSIANS = ("sum_of_inverses", "exact")
CONV_HESSIANS = ("auto", "exact", "block")
BATCHNORM_MODES = ("layerwise", "end")


#: Named recipes: a pairing and merge strategy of ``STRATEGIES`` followed by the steps beyond the
#: paper that it switches on (docs/REFIT.md). ``"mtz"`` alone stays exactly the paper's method.
RECIPES: dict[str, tuple[str, dict[str, bool]]] = {
    "mtz+refits": ("mtz", {"refit_layers": True, "refit_heads": True}),
}
#: What ``zip_models`` uses when no method is given: the best one-shot recipe measured (docs/RESULTS.md).
DEFAULT_METHOD = "mtz+refits"
_STEPS = ("refit_layers", "refit_heads", "repair")


def resolve_method(method: str, deferred: bool = False, **steps: bool | None) -> tuple[str, dict[str, bool]]:
    """The strategy and the post-zip steps that ``method`` (a strategy or a recipe) asks for.

    ``steps`` are the caller's ``refit_layers``, ``refit_heads`` and ``repair``: ``None`` takes the
    recipe's value, ``True``/``False`` override it. The refits and the repair work in one-shot
    zipping only, so with a schedule (``deferred``) a recipe zips with its strategy alone; a step
    asked for explicitly is kept (and refused later, with a message saying why).

    Example:
        >>> resolve_method("mtz+refits")
        ('mtz', {'refit_layers': True, 'refit_heads': True, 'repair': False})
        >>> resolve_method("mtz+refits", refit_heads=False)[1]["refit_heads"]
        False
        >>> resolve_method("mtz+refits", deferred=True)
        ('mtz', {'refit_layers': False, 'refit_heads': False, 'repair': False})
        >>> resolve_method("euclidean", repair=True)
        ('euclidean', {'refit_layers': False, 'refit_heads': False, 'repair': True})
    """
    unknown = [k for k in steps if k not in _STEPS]
    if unknown:
        raise TypeError(f"resolve_method got unknown steps {unknown}; expected some of {list(_STEPS)}.")
    if not isinstance(method, str) or (method not in STRATEGIES and method not in RECIPES):
        raise ValueError(
            f"Unknown method {method!r}; expected one of {sorted(STRATEGIES) + sorted(RECIPES)} "
            f"(the default, {DEFAULT_METHOD!r}, is MTZ followed by the layer and head refits; 'mtz' is the paper's method alone)."
        )
    strategy, implied = RECIPES.get(method, (method, {}))
    resolved = {}
    for name in _STEPS:
        given = steps.get(name)
        resolved[name] = bool(implied.get(name, False) and not deferred) if given is None else given
    return strategy, resolved


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class ZipOptions:
    """How to zip: every option of :func:`~tfmot_zip.zip_models` except the models and data.

    Attributes:
        method: pairing and merging strategy (``"mtz"``, ``"euclidean"``, ``"random"``, ``"activation"``).
        selection: ``"hungarian"`` (exact minimum-cost matching) or ``"greedy"`` (the paper's rule).
        damping: relative damping of the layer Hessians (``H + damping * mean(diag H) * I``).
        merged_hessian: with 3+ models, ``"sum_of_inverses"`` or ``"exact"`` for the merged side.
        conv_hessian: ``"exact"``, ``"block"`` or ``"auto"`` Hessians of Conv2D layers.
        calibration_samples: at most this many calibration samples per task (None: all).
        max_conv_rows: at most this many patch rows per task enter a convolution's Hessian (evenly
            subsampled positions beyond it, reported per layer by ``zip_summary``, unless an exact
            way, shifted products or the maps' Gram matrix, costs no more); None: all.
        seed: seeds the random choices.
        activation_memory_mb: megabytes of cached activations a zip keeps in memory at most; the
            rest go to temporary files read back batch by batch; layers run on batches of an eighth
            of it (None: no limit, 128 MB batches).
        recalibrate_batchnorm: re-estimate per-task BatchNorm statistics: ``True`` (or
            ``"layerwise"``) after every zipped layer, so that the next layer's Hessian sees the
            statistics it will run with (those no zipped layer reads are estimated when zipping
            ends, each from its inputs under the final network); ``"end"`` only once after
            zipping, by one training-mode pass over the whole model; ``False`` never.
        refit_layers: after zipping, re-solve every merged hidden layer, bottom-up, by damped least
            squares from its zipped inputs to each task's original pre-activations.
        refit_heads: after zipping, re-solve each task's Dense head from the zipped features (no
            parameters added): ``True`` (or ``"auto"``) by the cross-entropy to the original model's
            probabilities for a softmax or sigmoid head, by damped least squares to its
            pre-activations otherwise; ``"least_squares"``, ``"softmax"`` or ``"sigmoid"`` for every head.
        repair: after zipping (and the layer refit), give every merged unit, per task, the mean and
            standard deviation its original unit had on the calibration data (a per-task affine on
            the pre-activation, bottom-up; docs/REFIT.md).
        sharing: fraction of units shared per space, keyed by the name of the space's first writer.
        schedule: ``ZipSchedule.get_config()`` of a deferred zip, or None for one shot.

    Example:
        >>> options = ZipOptions(method="mtz", sharing={"fc1": 0.5})
        >>> ZipOptions.from_config(options.get_config()) == options
        True
        >>> ZipOptions(damping=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: Expected a finite non-negative damping (e.g. 1e-4). Received: damping=-1.0
    """

    method: str = "mtz"
    selection: str = "hungarian"
    damping: float = 1e-4
    merged_hessian: str = "sum_of_inverses"
    conv_hessian: str = "auto"
    calibration_samples: int | None = 10_000
    max_conv_rows: int | None = 200_000
    seed: int = 0
    activation_memory_mb: float | None = 256.0
    recalibrate_batchnorm: bool | str = True
    refit_layers: bool = False
    refit_heads: bool | str = False
    repair: bool = False
    sharing: dict = field(default_factory=dict)
    schedule: dict | None = None

    def __post_init__(self) -> None:
        if self.method not in STRATEGIES:
            raise ValueError(f"Unknown method {self.method!r}; expected one of {sorted(STRATEGIES)}.")
        if self.schedule is not None and STRATEGIES[self.method].least_squares:
            raise ValueError(
                f"method={self.method!r} fits every layer to the original models' outputs on calibration data before "
                "pairing, which one-shot zipping (schedule=None) has; with a schedule, use method='mtz'."
            )
        if self.conv_hessian not in CONV_HESSIANS:
            raise ValueError(f"Unknown conv_hessian {self.conv_hessian!r}; expected one of {list(CONV_HESSIANS)}.")
        if self.merged_hessian not in MERGED_HESSIANS:
            raise ValueError(f"Unknown merged_hessian {self.merged_hessian!r}; expected one of {list(MERGED_HESSIANS)}.")
        if self.selection not in SELECTORS:
            raise ValueError(f"Unknown selection {self.selection!r}; expected one of {sorted(SELECTORS)}.")
        damping = self.damping
        if isinstance(damping, bool) or not isinstance(damping, (int, float, np.floating, np.integer)) or not (
            math.isfinite(float(damping)) and float(damping) >= 0
        ):
            raise ValueError(f"Expected a finite non-negative damping (e.g. 1e-4). Received: damping={damping!r}")
        object.__setattr__(self, "damping", float(damping))
        samples = self.calibration_samples
        if samples is not None and (not _is_int(samples) or samples <= 0):
            raise ValueError(
                f"Expected a positive integer calibration_samples or None. Received: calibration_samples={samples!r}"
            )
        rows = self.max_conv_rows
        if rows is not None and (not _is_int(rows) or rows <= 0):
            raise ValueError(
                f"Expected a positive integer max_conv_rows or None (every patch row). Received: max_conv_rows={rows!r}"
            )
        memory = self.activation_memory_mb
        if memory is not None:
            if isinstance(memory, (bool, np.bool_)) or not isinstance(memory, (int, float, np.integer, np.floating)) or not (
                math.isfinite(float(memory)) and float(memory) >= 0
            ):
                raise ValueError(
                    "Expected a non-negative number of megabytes or None (no limit), e.g. activation_memory_mb=256. "
                    f"Received: activation_memory_mb={memory!r}"
                )
            object.__setattr__(self, "activation_memory_mb", float(memory))
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"Expected a non-negative integer seed. Received: seed={self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        if not isinstance(self.recalibrate_batchnorm, (bool, np.bool_)) and self.recalibrate_batchnorm not in BATCHNORM_MODES:
            raise ValueError(
                f"Expected True, False or one of {list(BATCHNORM_MODES)}. "
                f"Received: recalibrate_batchnorm={self.recalibrate_batchnorm!r}"
            )
        if isinstance(self.recalibrate_batchnorm, np.bool_):
            object.__setattr__(self, "recalibrate_batchnorm", bool(self.recalibrate_batchnorm))
        for name in ("refit_layers", "refit_heads", "repair"):
            value = getattr(self, name)
            if isinstance(value, np.bool_):
                object.__setattr__(self, name, bool(value))
            elif not isinstance(value, bool) and not (name == "refit_heads" and isinstance(value, str) and value in HEAD_FITS):
                expected = f"True, False or one of {list(HEAD_FITS)}" if name == "refit_heads" else "True or False"
                raise ValueError(f"Expected {expected}. Received: {name}={value!r}")
        object.__setattr__(self, "sharing", {str(k): float(v) for k, v in dict(self.sharing).items()})

    def replace(self, **changes: Any) -> "ZipOptions":
        """A copy with ``changes`` applied (and checked).

        Example:
            >>> ZipOptions().replace(method="euclidean").method
            'euclidean'
        """
        return dataclasses.replace(self, **changes)

    def get_config(self) -> dict:
        """A JSON-serialisable dict; :meth:`from_config` rebuilds the same options."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> "ZipOptions":
        """Options from :meth:`get_config` (unknown keys are refused, naming them)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"Unknown zip options {unknown}; known options are {sorted(names)}.")
        return cls(**config)
