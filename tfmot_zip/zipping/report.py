"""The report of a zip: per-layer sharing, parameters and timings (:class:`ZipReport`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["LayerSummary", "ZipReport"]


@dataclass
class LayerSummary:
    """Sharing of one zip-able layer."""

    name: str
    kind: str
    widths: list[int]
    shared_units: int
    params_before: int
    params_after: int
    merge_cost: float | None = None
    is_head: bool = False
    seconds: float | None = None
    pairs: list | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ZipReport:
    """Per-layer sharing, parameter counts and timings of a zipped model.

    ``budget`` is the allocation of a zip given ``sharing=Budget(...)`` (None otherwise): the
    budget, the stripped model's ``params``, ``fractions`` and ``units`` per space, and the
    ``drift`` measured per space (see :class:`tfmot_zip.zipping.budget.BudgetAllocation`).

    Example:
        >>> report = ZipReport(["a", "b"], [], 100, 60, budget={"budget": 60, "params": 58,
        ...                    "params_original": 100, "fractions": {"fc1": 0.75}})
        >>> print(report)  # doctest: +NORMALIZE_WHITESPACE
        layer         widths          shared  params before  params after  merge cost
        -----------------------------------------------------------------------------
        total parameters: 100 in the separate models -> 60 zipped (60.0%)
        budget: 60 parameters (60.0% of 100) -> 58 after strip_zipping; sharing fc1 0.750
    """

    task_names: list[str]
    layers: list[LayerSummary]
    params_original: int
    params_zipped: int
    zip_seconds: float | None = None
    options: dict | None = None
    extra: dict = field(default_factory=dict)
    budget: dict | None = None

    def __post_init__(self) -> None:
        # a layer's zip_record comes back wrapped by tf's attribute tracking: plain dicts and lists
        # so that as_dict() is JSON-serialisable
        self.budget = None if self.budget is None else _plain(self.budget)
        self.options = None if self.options is None else _plain(self.options)
        self.extra = _plain(self.extra)
        self.layers = [LayerSummary(**_plain(l.as_dict())) for l in self.layers]

    @property
    def shared_params(self) -> int:
        """Parameters used by more than one task (the paper's measure, over one network)."""
        return self.params_original - self.params_zipped

    def as_dict(self) -> dict:
        return {
            "task_names": self.task_names,
            "layers": [l.as_dict() for l in self.layers],
            "params_original": self.params_original,
            "params_zipped": self.params_zipped,
            "shared_params": self.shared_params,
            "zip_seconds": self.zip_seconds,
            "options": self.options,
            **({"budget": self.budget} if self.budget else {}),
            **self.extra,
        }

    def __str__(self) -> str:
        widths = ["/".join(str(w) for w in l.widths) + (" (head)" if l.is_head else "") for l in self.layers]
        # columns as wide as their longest entry (keras.applications names run to 25 characters), at least 14
        name_width = max([14] + [len(l.name) + 2 for l in self.layers])
        widths_width = max([14] + [len(w) + 2 for w in widths])
        head = (f"{'layer':<{name_width}}{'widths':<{widths_width}}{'shared':>8}{'params before':>15}{'params after':>14}"
                f"{'merge cost':>12}")
        lines = [head, "-" * len(head)]
        for l, width in zip(self.layers, widths):
            cost = "" if l.merge_cost is None else f"{l.merge_cost:.4g}"
            lines.append(f"{l.name:<{name_width}}{width:<{widths_width}}{l.shared_units:>8}{l.params_before:>15,}"
                         f"{l.params_after:>14,}{cost:>12}")
        lines.append(
            f"total parameters: {self.params_original:,} in the separate models -> {self.params_zipped:,} "
            f"zipped ({self.params_zipped / self.params_original:.1%})"
        )
        if self.budget:
            b = self.budget
            shares = ", ".join(f"{name} {f:.3f}" for name, f in b.get("fractions", {}).items())
            lines.append(
                f"budget: {b['budget']:,} parameters ({b['budget'] / b['params_original']:.1%} of "
                f"{b['params_original']:,}) -> {b['params']:,} after strip_zipping; sharing {shares}"
            )
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    """Plain dicts and lists (JSON-serialisable) from tracked mappings and sequences."""
    if isinstance(value, (dict, Mapping)):  # tf's _DictWrapper passes as dict, not always as Mapping
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
