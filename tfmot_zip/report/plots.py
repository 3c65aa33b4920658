"""PNG pictures of zipping results (matplotlib, Agg backend), written atomically."""
from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

from tfmot_zip.io import atomic_write_bytes

__all__ = ["accuracy_bars", "sharing_bars"]


def _figure():
    from tfmot_zip.compat import require

    matplotlib = require("matplotlib", "report", "Drawing plots")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def accuracy_bars(path: str | os.PathLike, task_names: Sequence[str], series: Mapping[str, Sequence[float]], title: str = "") -> None:
    """Grouped bars: one group per task, one bar per series (e.g. original, zipped, retrained).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "acc.png")
        >>> accuracy_bars(path, ["a", "b"], {"original": [90, 97], "zipped": [88, 95]})
        >>> os.path.getsize(path) > 0
        True
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(min(10, max(6, 0.9 * len(series) * len(task_names))), 4))
    width = 0.8 / max(1, len(series))
    low = min(min(v) for v in series.values())
    for k, (label, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(task_names))]
        bars = ax.bar(xs, values, width, label=label)
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(task_names)), task_names)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0, low - 10), 100)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)


def sharing_bars(path: str | os.PathLike, layers: Sequence[Mapping], title: str = "") -> None:
    """Per-layer stacked bars of shared and task-specific units, with merge costs annotated.

    ``layers``: dicts with ``name``, ``widths`` and ``shared_units`` (and optional ``merge_cost``).
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(layers)), 4))
    names = [l["name"] for l in layers]
    shared = [l["shared_units"] for l in layers]
    specific = [sum(l["widths"]) - 2 * l["shared_units"] if len(l["widths"]) == 2 else sum(l["widths"]) - l["shared_units"] for l in layers]
    ax.bar(names, shared, label="shared units")
    ax.bar(names, specific, bottom=shared, label="task-specific units")
    for i, l in enumerate(layers):
        cost = l.get("merge_cost")
        if cost:
            ax.annotate(f"cost {cost:.3g}", (i, shared[i] + specific[i]), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("physical units")
    ax.legend(fontsize=8)
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)
