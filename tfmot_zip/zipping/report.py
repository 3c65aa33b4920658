"""The report of a zip: per-layer sharing, parameters and timings (:class:`ZipReport`)."""
from __future__ import annotations

from dataclasses import dataclass, field

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
    """Per-layer sharing, parameter counts and timings of a zipped model."""

    task_names: list[str]
    layers: list[LayerSummary]
    params_original: int
    params_zipped: int
    zip_seconds: float | None = None
    options: dict | None = None
    extra: dict = field(default_factory=dict)

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
            **self.extra,
        }

    def __str__(self) -> str:
        head = f"{'layer':<14}{'widths':<14}{'shared':>8}{'params before':>15}{'params after':>14}{'merge cost':>12}"
        lines = [head, "-" * len(head)]
        for l in self.layers:
            cost = "" if l.merge_cost is None else f"{l.merge_cost:.4g}"
            widths = "/".join(str(w) for w in l.widths) + (" (head)" if l.is_head else "")
            lines.append(f"{l.name:<14}{widths:<14}{l.shared_units:>8}{l.params_before:>15,}{l.params_after:>14,}{cost:>12}")
        lines.append(
            f"total parameters: {self.params_original:,} in the separate models -> {self.params_zipped:,} "
            f"zipped ({self.params_zipped / self.params_original:.1%})"
        )
        return "\n".join(lines)
