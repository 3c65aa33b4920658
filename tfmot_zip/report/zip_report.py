"""A report of one zip: per-layer sharing and merge costs, accuracy per task, sizes.

:func:`write_zip_report` writes, into one folder, ``zip_report.json`` (every figure),
``zip_report.md`` (tables, linking the pictures), ``zip_report.png`` (an overview: units per
layer split into shared and task-specific, merge cost per layer, accuracy before and after per
task, sizes), ``sharing.png`` and, when accuracies are given, ``accuracy.png`` (both from
:mod:`tfmot_zip.report.plots`). Every file is written atomically.

A model straight from :func:`tfmot_zip.zip_models` carries its merge costs and per-layer
zipping times; a model loaded from a file has only what :func:`tfmot_zip.zip_summary` reads
from its layers (the sharing), so costs and times are reported as not recorded.

Example:
    ``write_zip_report(zipped, "out/report", accuracy_before=[90.7, 96.5], accuracy_after=[90.6, 96.4])``
    writes ``report.md``, ``report.json`` and the PNGs (see :func:`write_zip_report`).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from tfmot_zip.io import atomic_write_json, atomic_write_text, check_writable_dir

__all__ = ["zip_report_data", "write_zip_report", "render_zip_report_markdown", "REPORT_FILES"]

#: File names written by :func:`write_zip_report` (key -> name).
REPORT_FILES = {
    "json": "zip_report.json",
    "markdown": "zip_report.md",
    "overview_png": "zip_report.png",
    "sharing_png": "sharing.png",
    "accuracy_png": "accuracy.png",
}

Accuracies = Union[Sequence[float], Mapping[str, Sequence[float]]]


def _check_accuracies(value: Accuracies | None, argument: str, n_tasks: int, default_label: str) -> dict[str, list[float]]:
    """``{label: [per-task accuracy in percent]}``; a clear error for anything else."""
    if value is None:
        return {}
    series = dict(value) if isinstance(value, Mapping) else {default_label: value}
    if not series:
        raise ValueError(f"{argument} is an empty mapping; pass per-task accuracies or None.")
    out: dict[str, list[float]] = {}
    for label, values in series.items():
        if not isinstance(label, str) or not label:
            raise TypeError(f"{argument} labels must be non-empty strings. Received: {label!r}")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(
                f"Expected {argument} as one accuracy per task (a list of {n_tasks} numbers in percent). "
                f"Received: {argument}[{label!r}]={values!r}"
            )
        if len(values) != n_tasks:
            raise ValueError(
                f"{argument}[{label!r}] has {len(values)} values but the model has {n_tasks} tasks; "
                "pass one accuracy per task, in the order of the model outputs."
            )
        checked = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)) or not 0.0 <= float(v) <= 100.0:
                raise ValueError(
                    f"Expected accuracies in percent, finite and within 0..100. Received: {argument}[{label!r}]={list(values)!r}"
                )
            checked.append(round(float(v), 4))
        out[label] = checked
    return out


def _check_sizes(sizes: Mapping[str, float] | None) -> dict[str, int]:
    if sizes is None:
        return {}
    if not isinstance(sizes, Mapping):
        raise TypeError(f"Expected sizes as a mapping {{label: bytes}}. Received: {type(sizes).__name__}")
    out = {}
    for label, value in sizes.items():
        if not isinstance(label, str) or not label:
            raise TypeError(f"sizes labels must be non-empty strings. Received: {label!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(float(value)) or value < 0:
            raise ValueError(f"Expected sizes in bytes, finite and non-negative. Received: sizes[{label!r}]={value!r}")
        out[label] = int(value)
    return out


def zip_report_data(
    zipped: Any,
    *,
    accuracy_before: Accuracies | None = None,
    accuracy_after: Accuracies | None = None,
    sizes: Mapping[str, float] | None = None,
) -> dict:
    """The figures of a zip report, as a JSON-ready dict (nothing written).

    Args:
        zipped: a model from :func:`tfmot_zip.zip_models` (or loaded from its ``.keras``).
        accuracy_before: test accuracy (%) of every task before zipping (the original models),
            or ``{label: [...]}``.
        accuracy_after: accuracy (%) of every task of ``zipped``, or ``{label: [...]}`` for
            several stages (e.g. ``{"zipped": [...], "retrained 300 steps": [...]}``).
        sizes: file sizes in bytes keyed by a label (e.g. ``{"zipped .tflite": 215000}``).

    Returns:
        ``{"task_names", "layers", "params", "zip_seconds", "accuracy", "sizes"}``; every layer
        has ``shared_units``, ``task_specific_units`` (per task), parameters before and after,
        ``merge_cost`` and ``seconds`` (None when not recorded).

    Raises:
        TypeError: ``zipped`` is not a tf_keras model; malformed accuracies or sizes.
        ValueError: a model without zip layers; accuracies of the wrong length or outside 0..100;
            negative sizes.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> data = zip_report_data(zipped, accuracy_after=[88.1, 95.0])
        >>> [layer["shared_units"] for layer in data["layers"]]
        [8, 4, 0]
    """
    from tfmot_zip.zipping.api import zip_summary

    summary = zip_summary(zipped)  # validates: tf_keras model with zip layers
    n_tasks = len(summary.task_names)
    before = _check_accuracies(accuracy_before, "accuracy_before", n_tasks, "original")
    after = _check_accuracies(accuracy_after, "accuracy_after", n_tasks, "zipped")
    overlap = set(before) & set(after)
    if overlap:
        raise ValueError(f"accuracy_before and accuracy_after use the same labels {sorted(overlap)}; give each stage its own label.")
    checked_sizes = _check_sizes(sizes)
    from tfmot_zip.model.layers import ZipLayerMixin

    # every zip layer the summary lists, depthwise ones included
    layers_by_name = {layer.name: layer for layer in zipped.layers if isinstance(layer, ZipLayerMixin)}
    layers = []
    for entry in summary.layers:
        layer = layers_by_name[entry.name]
        owners = layer.unit_tasks()
        specific = [sum(1 for tasks in owners.values() if tasks == frozenset({t})) for t in range(n_tasks)]
        cost = entry.merge_cost
        layers.append({
            "name": entry.name,
            "kind": entry.kind,
            "is_head": bool(entry.is_head),
            "widths": [int(w) for w in entry.widths],
            "shared_units": int(entry.shared_units),
            "task_specific_units": specific,
            "physical_units": int(entry.shared_units) + int(sum(specific)),
            "shared_fraction": round(entry.shared_units / min(entry.widths), 4) if min(entry.widths) else 0.0,
            "params_before": int(entry.params_before),
            "params_after": int(entry.params_after),
            "merge_cost": None if cost is None or entry.is_head else float(cost),
            "seconds": None if entry.seconds is None else round(float(entry.seconds), 4),
        })
    series = {**before, **after}
    drops = {}
    if before and after:
        reference_label, reference = next(iter(before.items()))
        drops = {label: [round(r - v, 4) for r, v in zip(reference, values)] for label, values in after.items()}
    return {
        "task_names": list(summary.task_names),
        "model_name": getattr(zipped, "name", ""),
        "layers": layers,
        "params": {
            "separate": int(summary.params_original),
            "zipped": int(summary.params_zipped),
            "shared": int(summary.shared_params),
            "zipped_fraction": round(summary.params_zipped / summary.params_original, 4) if summary.params_original else None,
        },
        "zip_seconds": None if summary.zip_seconds is None else round(float(summary.zip_seconds), 3),
        "accuracy": {
            "series": series,
            "before_labels": list(before),
            "after_labels": list(after),
            "drop": drops,
        },
        "sizes": checked_sizes,
        "summary_text": str(summary),
    }


def _fmt_cost(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def render_zip_report_markdown(report: dict, image_prefix: str = "") -> str:
    """The Markdown of a report dict from :func:`zip_report_data` (images linked with ``image_prefix``).

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> text = render_zip_report_markdown(zip_report_data(zipped))
        >>> text.startswith("# Zip report")
        True
    """
    tasks = report["task_names"]
    params = report["params"]
    lines = [
        f"# Zip report: {' + '.join(tasks)}",
        "",
        f"Parameters: {params['separate']:,} in the separate models -> {params['zipped']:,} zipped "
        f"({params['zipped_fraction']:.1%}; {params['shared']:,} saved by sharing)."
        + (f" Zipping took {report['zip_seconds']:.2f} s." if report.get("zip_seconds") is not None else ""),
        "",
        f"![overview]({image_prefix}{REPORT_FILES['overview_png']})",
        "",
        "## Sharing per layer",
        "",
        "| layer | kind | widths | shared units | task-specific units | params before | params after | merge cost | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for layer in report["layers"]:
        widths = " / ".join(str(w) for w in layer["widths"]) + (" (head)" if layer["is_head"] else "")
        specific = " / ".join(str(s) for s in layer["task_specific_units"])
        seconds = "—" if layer["seconds"] is None else f"{layer['seconds']:.3f}"
        lines.append(
            f"| {layer['name']} | {layer['kind']} | {widths} | {layer['shared_units']} | {specific} | "
            f"{layer['params_before']:,} | {layer['params_after']:,} | {_fmt_cost(layer['merge_cost'])} | {seconds} |"
        )
    if all(layer["merge_cost"] is None for layer in report["layers"] if not layer["is_head"]):
        lines += ["", "Merge costs and times are not recorded in a model loaded from a file (only the sharing is)."]
    accuracy = report["accuracy"]
    if accuracy["series"]:
        labels = list(accuracy["series"])
        lines += ["", "## Accuracy per task (%)", "", "| task | " + " | ".join(labels) + (" | drop |" if accuracy["drop"] else " |"),
                  "|---|" + "---|" * len(labels) + ("---|" if accuracy["drop"] else "")]
        for t, task in enumerate(tasks):
            row = f"| {task} | " + " | ".join(f"{accuracy['series'][label][t]:.2f}" for label in labels) + " |"
            if accuracy["drop"]:
                row += " " + ", ".join(f"{d[t]:+.2f}" for d in accuracy["drop"].values()) + " |"
            lines.append(row)
        if accuracy["drop"]:
            lines += ["", f"Drop: {accuracy['before_labels'][0]} minus {', '.join(accuracy['after_labels'])} (positive = lost accuracy)."]
    if report["sizes"]:
        lines += ["", "## Sizes", "", "| file | bytes |", "|---|---|"]
        for label, value in report["sizes"].items():
            lines.append(f"| {label} | {value:,} |")
    lines += ["", "## zip_summary", "", "```", report["summary_text"], "```", ""]
    return "\n".join(lines)


def _wrap(label: str, width: int = 18) -> str:
    """Breaks a long label (task names such as ``lenet_300_100_classes_0_4_s0``) at ``_``, ``-`` or spaces."""
    if len(label) <= width:
        return label
    lines, current = [], ""
    for token in re.split(r"(?<=[_\- ])", label):
        if current and len(current) + len(token) > width:
            lines.append(current)
            current = ""
        current += token
    lines.append(current)
    return "\n".join(lines)


def _overview_png(report: dict, path: Path) -> None:
    """Four panels: units per layer, merge cost per layer, accuracy per task, sizes."""
    from tfmot_zip.report import plots

    plt = plots._figure()
    tasks = report["task_names"]
    short = [_wrap(t) for t in tasks]
    layers = report["layers"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    ax = axes[0, 0]
    names = [layer["name"] for layer in layers]
    xs = np.arange(len(layers))
    shared = np.array([layer["shared_units"] for layer in layers], dtype=float)
    ax.bar(xs, shared, color=colors[0], label="shared")
    bottom = shared.copy()
    for t, task in enumerate(tasks):
        specific = np.array([layer["task_specific_units"][t] for layer in layers], dtype=float)
        ax.bar(xs, specific, bottom=bottom, color=colors[(t + 1) % len(colors)], label=f"only {_wrap(task, 30)}")
        bottom += specific
    for x, layer, top in zip(xs, layers, bottom):
        text = "head" if layer["is_head"] else f"{layer['shared_fraction']:.0%} shared"
        ax.annotate(text, (x, top), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, names, rotation=30 if len(layers) > 5 else 0)
    ax.set_ylabel("physical units (neurons / channels)")
    ax.set_ylim(0, max(bottom.max(), 1) * 1.12)
    ax.set_title("Units per layer")
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[0, 1]
    hidden = [layer for layer in layers if not layer["is_head"]]
    costs = [layer["merge_cost"] for layer in hidden]
    if hidden and all(c is not None for c in costs):
        bars = ax.bar([layer["name"] for layer in hidden], costs, color=colors[3 % len(colors)])
        for bar, cost in zip(bars, costs):
            ax.annotate(f"{cost:.3g}", (bar.get_x() + bar.get_width() / 2, cost), ha="center", va="bottom", fontsize=8)
        positive = [c for c in costs if c > 0]
        if positive and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
        ax.set_ylabel("summed merge cost (layer-wise error increase)")
    else:
        ax.text(0.5, 0.5, "merge costs not recorded\n(model loaded from a file)", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title("Merge cost per layer")

    ax = axes[1, 0]
    series = report["accuracy"]["series"]
    if series:
        width = 0.8 / len(series)
        low = min(min(v) for v in series.values())
        for k, (label, values) in enumerate(series.items()):
            pos = np.arange(len(tasks)) + (k - (len(series) - 1) / 2) * width
            bars = ax.bar(pos, values, width, label=label, color=colors[(k + len(tasks) + 2) % len(colors)])
            for bar, v in zip(bars, values):
                ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(tasks)), short, fontsize=8)
        bottom_limit = max(0.0, low - 10.0)
        ax.set_ylim(bottom_limit, 100.0 + 0.15 * (100.0 - bottom_limit))  # room for the legend above the bars
        ax.set_yticks([tick for tick in ax.get_yticks() if bottom_limit <= tick <= 100.0])
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7, loc="upper center", ncols=min(3, len(series)))
    else:
        ax.text(0.5, 0.5, "accuracy not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title("Accuracy per task")

    ax = axes[1, 1]
    params = report["params"]
    labels = ["parameters, separate", "parameters, zipped"]
    values = [params["separate"], params["zipped"]]
    units = ["params", "params"]
    for label, value in report["sizes"].items():
        labels.append(label)
        values.append(value)
        units.append("bytes")
    ys = np.arange(len(labels))[::-1]
    scale = {"params": max(values[:2]) or 1, "bytes": max([v for v, u in zip(values, units) if u == "bytes"] or [1]) or 1}
    bars = ax.barh(ys, [v / scale[u] for v, u in zip(values, units)], color=[colors[0] if u == "params" else colors[2] for u in units])
    for bar, value, unit in zip(bars, values, units):
        text = f"{value:,}" if unit == "params" else f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value:,} B"
        ax.annotate(text, (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center", ha="left", fontsize=8, xytext=(3, 0), textcoords="offset points")
    ax.set_yticks(ys, [_wrap(label, 24) for label in labels], fontsize=8)
    ax.set_xlim(0, 1.35)
    ax.set_xticks([])
    ax.set_title("Sizes (bars relative to the largest of each unit)")
    fig.suptitle(f"Zip report: {' + '.join(tasks)}", fontsize=12)
    plots._save(fig, path)
    plt.close(fig)


def write_zip_report(
    zipped: Any,
    out_dir: str | os.PathLike,
    *,
    accuracy_before: Accuracies | None = None,
    accuracy_after: Accuracies | None = None,
    sizes: Mapping[str, float] | None = None,
) -> dict:
    """Writes the report of a zip (JSON, Markdown, PNG) into ``out_dir`` and returns its dict.

    Files (atomic writes): ``zip_report.json``, ``zip_report.md``, ``zip_report.png`` (overview),
    ``sharing.png`` (per-layer shared and task-specific units with merge costs) and, when
    accuracies are given, ``accuracy.png``. Arguments are validated before anything is written.

    Args:
        zipped: a model from :func:`tfmot_zip.zip_models` (or loaded from its ``.keras``).
        out_dir: folder to write into (created if needed).
        accuracy_before: per-task accuracy (%) before zipping, or ``{label: [...]}``.
        accuracy_after: per-task accuracy (%) of ``zipped``, or ``{label: [...]}`` per stage.
        sizes: file sizes in bytes keyed by a label.

    Returns:
        The dict of :func:`zip_report_data`, plus ``"files"``: ``{key: path}`` of what was written.

    Raises:
        TypeError, ValueError: see :func:`zip_report_data`.
        OSError: ``out_dir`` cannot be created or written.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> import tempfile
        >>> report = write_zip_report(zipped, tempfile.mkdtemp(), accuracy_before=[90.7, 96.5],
        ...                           accuracy_after=[90.6, 96.4], sizes={"zipped .keras": 2_000_000})
        >>> sorted(report["files"])
        ['accuracy_png', 'json', 'markdown', 'overview_png', 'sharing_png']
    """
    report = zip_report_data(zipped, accuracy_before=accuracy_before, accuracy_after=accuracy_after, sizes=sizes)
    folder = check_writable_dir(out_dir)
    from tfmot_zip.report import plots

    files = {key: str(folder / name) for key, name in REPORT_FILES.items()}
    if not report["accuracy"]["series"]:
        files.pop("accuracy_png")
    title = " + ".join(report["task_names"])
    _overview_png(report, Path(files["overview_png"]))
    plots.sharing_bars(files["sharing_png"], report["layers"], title=f"Shared units per layer: {title}")
    if "accuracy_png" in files:
        plots.accuracy_bars(files["accuracy_png"], report["task_names"], report["accuracy"]["series"], title=title)
    report["files"] = files
    atomic_write_text(files["markdown"], render_zip_report_markdown(report))
    atomic_write_json(files["json"], report)
    return report
