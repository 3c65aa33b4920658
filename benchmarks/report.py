"""Markdown tables and PNG plots from a benchmark results dict (``results.json``).

Example:
    >>> import json
    >>> results = json.load(open("out/bench/results.json"))  # doctest: +SKIP
    >>> print(render_markdown(results))  # doctest: +SKIP
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional, Sequence

from tfmot_zip.io import atomic_write_bytes, check_writable_dir

__all__ = ["render_markdown", "write_plots", "mean_drop", "best_baseline"]

from benchmarks.scenarios import strategy

MTZ = "mtz-hungarian"
#: One colour per strategy in every plot.
COLORS = {"mtz-hungarian": "tab:blue", "mtz-greedy": "tab:cyan", "activation": "tab:orange",
          "euclidean": "tab:green", "random": "tab:red", "mtz+refits": "tab:purple",
          "mtz+refits+repair": "tab:pink", "euclidean+refits": "tab:olive"}


def mean_drop(drops: Sequence[float]) -> float:
    """Mean accuracy drop (points) over the tasks."""
    return sum(drops) / len(drops)


def _fmt_pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _pair(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def best_baseline(rows: Sequence[dict], phase: str = "retrained") -> Optional[str]:
    """The baseline (averaged pairs, nothing after the merge) with the smallest mean drop averaged
    over the fractions it has."""
    scores: dict[str, list[float]] = {}
    for row in rows:
        if not strategy(row["strategy"]).is_baseline or row.get(phase) is None:
            continue
        scores.setdefault(row["strategy"], []).append(mean_drop(row[phase]["drop"]))
    if not scores:
        return None
    return min(scores, key=lambda s: sum(scores[s]) / len(scores[s]))


def _strategies(rows: Sequence[dict]) -> list[str]:
    seen: list[str] = []
    for row in rows:
        if row["strategy"] not in seen:
            seen.append(row["strategy"])
    return seen


def _fractions(rows: Sequence[dict]) -> list[float]:
    return sorted({row["fraction"] for row in rows})


def _cell(rows: Sequence[dict], label: str, fraction: float) -> Optional[dict]:
    for row in rows:
        if row["strategy"] == label and row["fraction"] == fraction:
            return row
    return None


def _drop_table(rows: Sequence[dict], steps: int) -> list[str]:
    fractions = _fractions(rows)
    labels = _strategies(rows)
    best: dict[tuple[float, str], float] = {}
    for f in fractions:
        for phase in ("zipped", "retrained"):
            values = [mean_drop(r[phase]["drop"]) for r in rows if r["fraction"] == f and r.get(phase)]
            if values:
                best[(f, phase)] = min(values)
    lines = [
        f"Mean accuracy drop over the two tasks (points; lower is better), right after zipping -> after {steps} joint "
        "retraining steps. Best per column in bold.",
        "",
        "| strategy | " + " | ".join(f"sharing {f:g}" for f in fractions) + " |",
        "|---|" + "---|" * len(fractions),
    ]
    for label in labels:
        cells = []
        for f in fractions:
            row = _cell(rows, label, f)
            if row is None:
                cells.append("-")
                continue
            parts = []
            for phase in ("zipped", "retrained"):
                if row.get(phase) is None:
                    continue
                value = mean_drop(row[phase]["drop"])
                text = f"{value:.2f}"
                parts.append(f"**{text}**" if abs(value - best[(f, phase)]) < 1e-9 else text)
            cells.append(" -> ".join(parts))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _detail_table(rows: Sequence[dict], names: Sequence[str]) -> list[str]:
    lines = [
        f"| sharing | strategy | zipped {names[0]} | zipped {names[1]} | retrained {names[0]} | retrained {names[1]} | "
        "parameters | shared / one network | zip time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["fraction"], _strategies(rows).index(r["strategy"]))):
        z = row["zipped"]["accuracy"]
        r = row["retrained"]["accuracy"] if row.get("retrained") else ["-", "-"]
        r = [f"{v:.2f}" if isinstance(v, float) else v for v in r]
        lines.append(
            f"| {row['fraction']:g} | {row['strategy']} | {z[0]:.2f} | {z[1]:.2f} | {r[0]} | {r[1]} | "
            f"{row['params_zipped']:,} | {_fmt_pct(row['shared_over_one_network'])} | {row['zip_seconds']:.2f} |"
        )
    return lines


def _reference_table(result: dict, learning_rate: float) -> list[str]:
    orig = result["originals"]
    steps_orig = orig["train_steps"][0]
    lines = [
        "| model | joint steps | steps / one original's training | Adam lr | accuracy (task A / task B) | parameters |",
        "|---|---|---|---|---|---|",
        f"| originals (separate) | {steps_orig} each | 100% | 1e-3 | {_pair(orig['accuracy'])} | {orig['params_separate']:,} |",
    ]
    if orig.get("bn_recalibrated_accuracy"):
        lines.append(
            f"| originals, BatchNorm statistics re-estimated on the calibration images (as zip_models does) | 0 | 0% | - | "
            f"{_pair(orig['bn_recalibrated_accuracy'])} | {orig['params_separate']:,} |"
        )
    control = result.get("control")
    if control:
        keep = {h[0] for h in control["history"]} & ({_retrain_steps(result)} | {control["history"][-1][0]})
        for step, acc in control["history"]:
            if step in keep:
                lines.append(
                    f"| control: originals trained on | {step} | {step / steps_orig:.1%} | {control['learning_rate']:g} | "
                    f"{_pair(acc)} | {orig['params_separate']:,} |"
                )
    for row in result["grid"]:
        if row["strategy"] == MTZ and row["fraction"] == max(_fractions(result["grid"])) and row.get("retrained"):
            rt = row["retrained"]
            lines.append(
                f"| MTZ-hungarian sharing {row['fraction']:g} + retraining | {rt['steps']} | {rt['steps'] / steps_orig:.1%} | "
                f"{learning_rate:g} | {_pair(rt['accuracy'])} | {row['params_zipped']:,} |"
            )
    scratch = result.get("scratch")
    if scratch:
        for step, acc in scratch["history"]:
            lines.append(
                f"| fully shared network from scratch | {step} | {step / steps_orig:.1%} | {scratch['learning_rate']:g} | "
                f"{_pair(acc)} | {scratch['params']:,} |"
            )
    return lines


def _retrain_steps(result: dict) -> int:
    for row in result["grid"]:
        if row.get("retrained"):
            return row["retrained"]["steps"]
    return -1


def _step(value) -> str:
    return "-" if value is None else str(value)


def _search_table(search: dict) -> list[str]:
    lines = [
        "| sharing fraction | shared params / one network | right after zipping | within 0.5 of originals at step | "
        "accuracy then | control at that step | zipped - control | within 0.5 of control at step | steps run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for trial in search["trials"]:
        control = trial.get("control_accuracy")
        gap = [-d for d in trial["drop_vs_control"]] if "drop_vs_control" in trial else None
        lines.append(
            f"| {trial['fraction']:g} | {_fmt_pct(trial['shared_over_one_network'])} | {_pair(trial['history'][0][1])} | "
            f"{_step(trial['pass_step'])} | {_pair(trial['accuracy'])} | {_pair(control) if control else '-'} | "
            f"{' / '.join(f'{g:+.2f}' for g in gap) if gap else '-'} | {_step(trial['control_pass_step'])} | {trial['steps_run']} |"
        )
    return lines


def summary_table(results: dict) -> list[str]:
    """One row per scenario: the sharing the search reached, with the control beside it."""
    lines = [
        "| scenario | originals | sharing fraction | shared params / one network | target | steps | accuracy | "
        "control (originals trained on, same steps) | stricter: within 0.5 of the control |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results["scenarios"].items():
        search = result.get("search")
        if not search:
            continue
        best = search["result"]
        strict = search.get("result_vs_control")
        strict_text = "-" if strict is None else (
            f"sharing {strict['fraction']:g}: {_fmt_pct(strict['shared_over_one_network'])} (step {strict['control_pass_step']})"
        )
        target = search["target_shared_over_one_network"]
        if best is None:
            lines.append(f"| {name} | {_pair(result['originals']['accuracy'])} | none passed | - | {_fmt_pct(target)} | - | - | - | {strict_text} |")
            continue
        met = "" if search["meets_target"] is None else (" (met)" if search["meets_target"] else " (missed)")
        control = best.get("control_accuracy")
        lines.append(
            f"| {name} | {_pair(result['originals']['accuracy'])} | {best['fraction']:g} | "
            f"{_fmt_pct(best['shared_over_one_network'])} ({best['shared_params']:,}) | {_fmt_pct(target)}{met} | "
            f"{best['steps']} | {_pair(best['accuracy'])} | {_pair(control) if control else '-'} | {strict_text} |"
        )
    return lines


def zip_time_table(results: dict) -> list[str]:
    """Mean zipping time per strategy and scenario, and its ratio to the Euclidean baseline's."""
    names = list(results["scenarios"])
    lines = [
        "| strategy | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    means: dict[str, dict[str, float]] = {}
    for name, result in results["scenarios"].items():
        for row in result["grid"]:
            means.setdefault(row["strategy"], {}).setdefault(name, [])
            means[row["strategy"]][name].append(row["zip_seconds"])
    for label, per in means.items():
        cells = []
        for name in names:
            values = per.get(name)
            base = means.get("euclidean", {}).get(name)
            if not values:
                cells.append("-")
                continue
            mean = sum(values) / len(values)
            ratio = f" ({mean / (sum(base) / len(base)):.1f}x)" if base and sum(base) > 0 else ""
            cells.append(f"{mean:.2f} s{ratio}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(results: dict, img_prefix: str = "") -> str:
    """The results as Markdown: a summary, then per scenario the tables and the plots."""
    machine = results["machine"]
    lines = [
        "# tfmot_zip benchmark" + (" (quick mode)" if results["config"]["quick"] else ""),
        "",
        f"Command: `{results.get('command')}`; started {results['started_utc']}; run time "
        f"{results.get('seconds', 0) / 60:.1f} min ({results.get('cpu_seconds', 0) / 60:.1f} min of CPU time)"
        f"{'' if results.get('complete') else ' (INCOMPLETE: partial results)'}.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, load average {machine['load_average_1_5_15']} at the start"
        + (f", {results['machine_at_end']['load_average_1_5_15']} at the end" if results.get("machine_at_end") else "")
        + " (shared machine). Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        "",
    ]
    probe = results.get("resnet_probe")
    if probe is not None:
        lines += [
            "ResNet-20 probe (zip two tiny untrained ResNet-20): "
            + ("supported." if probe["supported"] else f"not supported: `{probe['error']}`."),
            "",
        ]
    config = results["config"]
    searched = any(r.get("search") for r in results["scenarios"].values())
    lines += [] if not searched else [
        f"## Sharing MTZ reaches with every task within {config['search_tolerance']} point of its original "
        f"after at most {config['search_max_steps']} joint retraining steps",
        "",
        "MTZ-hungarian one-shot at the fraction, then joint retraining (Adam "
        f"{config['learning_rate']:g}, one batch of {config['batch_size']} per task per step), evaluated every "
        f"{config['search_eval_every']} steps; fractions tried from the highest down. Shared parameters = parameters of "
        "the separate models minus those of the zipped model, over one network's parameters.",
        "",
        *summary_table(results),
        "",
    ]
    lines += [
        "Zipping time (mean over the grid; ratio to the Euclidean baseline measured in the same run):",
        "",
        *zip_time_table(results),
        "",
    ]
    for name, result in results["scenarios"].items():
        orig = result["originals"]
        names = result["task_names"]
        lines += [
            f"## {result['title']}",
            "",
            f"Originals `{names[0]}` / `{names[1]}`: {_pair(orig['accuracy'])} % on {result['test_samples'][0]:,} / "
            f"{result['test_samples'][1]:,} test images, trained {orig['train_steps'][0]:,} / {orig['train_steps'][1]:,} steps"
            + (f" on {orig['train_samples']:,} images" if orig.get("train_samples") else "")
            + f"; {orig['params_each'][0]:,} parameters each. Calibration: {result['calibration_samples']:,} "
            "training images per task.",
            "",
            *_drop_table(result["grid"], _retrain_steps(result)),
            "",
            f"![accuracy]({img_prefix}bench_{name}_accuracy.png)",
            "",
            "Retraining budgets and the reference points (accuracy task A / task B):",
            "",
            *_reference_table(result, config["learning_rate"]),
            "",
        ]
        if result.get("search"):
            lines += ["Sharing search trials (MTZ-hungarian):", "", *_search_table(result["search"]), ""]
        lines += [
            f"![layers]({img_prefix}bench_{name}_layers.png)",
            "",
            "<details><summary>Every configuration</summary>",
            "",
            *_detail_table(result["grid"], names),
            "",
            "</details>",
            "",
        ]
    if any(r.get("search") for r in results["scenarios"].values()):
        lines += [f"![search]({img_prefix}bench_search.png)", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _accuracy_plot(path: Path, name: str, result: dict) -> None:
    plt = _plt()
    rows = result["grid"]
    fractions = _fractions(rows)
    steps = _retrain_steps(result)
    phases = [("zipped", "right after zipping")] + ([("retrained", f"after {steps} joint steps")] if steps > 0 else [])
    fig, axes = plt.subplots(1, len(phases), figsize=(5.5 * len(phases), 4), squeeze=False)
    original = sum(result["originals"]["accuracy"]) / 2
    for ax, (phase, title) in zip(axes[0], phases):
        for label in _strategies(rows):
            points = [(r["fraction"], sum(r[phase]["accuracy"]) / 2) for r in rows if r["strategy"] == label and r.get(phase)]
            if points:
                xs, ys = zip(*sorted(points))
                ax.plot(xs, ys, marker="o", label=label, color=COLORS.get(label), linewidth=2.2 if label == MTZ else 1.2)
        ax.axhline(original, color="gray", linestyle="--", label="originals")
        recalibrated = result["originals"].get("bn_recalibrated_accuracy")
        if recalibrated:
            ax.axhline(sum(recalibrated) / 2, color="gray", linestyle="-.", label="originals, BatchNorm re-estimated")
        if phase == "retrained":
            control = dict((s, a) for s, a in (result.get("control") or {}).get("history", []))
            if steps in control:
                ax.axhline(sum(control[steps]) / 2, color="black", linestyle=":", label=f"originals + {steps} steps (control)")
            scratch = dict((s, a) for s, a in (result.get("scratch") or {}).get("history", []))
            if steps in scratch:
                ax.axhline(sum(scratch[steps]) / 2, color="tab:brown", linestyle="-.", label=f"fully shared, {steps} steps from scratch")
        ax.set_title(title)
        ax.set_xlabel("sharing fraction (each hidden layer)")
        ax.set_xticks(fractions)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean test accuracy of the two tasks (%)")
    for ax, (phase, _) in zip(axes[0], phases):  # each panel zoomed on its own values and reference lines
        values = [sum(r[phase]["accuracy"]) / 2 for r in rows if r.get(phase)] + [original]
        values += [line.get_ydata()[0] for line in ax.get_lines() if len(line.get_xdata()) == 2 and line.get_xdata()[0] == 0]
        ax.set_ylim(max(0.0, min(values) - 1.0), min(100.0, max(values) + 1.0))
    handles: dict = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(result["title"], fontsize=10)
    _save(fig, path)
    plt.close(fig)


def _layers_plot(path: Path, result: dict) -> None:
    plt = _plt()
    rows = [r for r in result["grid"] if r["strategy"] == MTZ]
    greedy = {r["fraction"]: r for r in result["grid"] if r["strategy"] == "mtz-greedy"}
    if not rows:
        return
    layers = [l["name"] for l in rows[0]["layers"] if not l["is_head"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(min(16, max(10, 0.55 * len(layers) * 2 + 4)), 4))
    width = 0.8 / len(rows)
    for k, row in enumerate(sorted(rows, key=lambda r: r["fraction"])):
        hidden = [l for l in row["layers"] if not l["is_head"]]
        xs = [i + (k - (len(rows) - 1) / 2) * width for i in range(len(hidden))]
        saved = [100 * (1 - l["params_after"] / l["params_before"]) for l in hidden]
        left.bar(xs, saved, width, label=f"sharing {row['fraction']:g}")
        costs = [max(l["merge_cost"] or 0.0, 1e-12) for l in hidden]
        right.bar(xs, costs, width, label=f"hungarian, sharing {row['fraction']:g}")
        if row["fraction"] in greedy:
            g = [max(l["merge_cost"] or 0.0, 1e-12) for l in greedy[row["fraction"]]["layers"] if not l["is_head"]]
            right.scatter(xs, g, marker="_", s=120, color="black", zorder=3,
                          label="greedy (same sharing)" if k == len(rows) - 1 else None)
    for ax in (left, right):
        ax.set_xticks(range(len(layers)), layers, rotation=45 if len(layers) > 6 else 0, ha="right" if len(layers) > 6 else "center", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    left.set_ylabel("parameters saved in the layer (%)")
    left.set_title("MTZ-hungarian: per-layer sharing")
    right.set_yscale("log")
    right.set_ylabel("merge cost (sum of layer-wise error increases)")
    right.set_title("MTZ merge cost per layer (one-shot, bottom-up)")
    left.legend(fontsize=8)
    right.legend(fontsize=7)
    fig.suptitle(result["title"], fontsize=10)
    _save(fig, path)
    plt.close(fig)


def _search_plot(path: Path, results: dict) -> None:
    plt = _plt()
    items = [(n, r) for n, r in results["scenarios"].items() if r.get("search")]
    if not items:
        return
    tolerance = results["config"]["search_tolerance"]
    fig, axes = plt.subplots(1, len(items), figsize=(5 * len(items), 4), squeeze=False)
    for ax, (name, result) in zip(axes[0], items):
        orig = result["originals"]["accuracy"]
        for trial in result["search"]["trials"]:
            steps = [s for s, _ in trial["history"]]
            worst = [max(o - a for o, a in zip(orig, acc)) for _, acc in trial["history"]]
            ax.plot(steps, worst, marker=".", label=f"f={trial['fraction']:g} ({100 * trial['shared_over_one_network']:.0f}% shared)")
        control = (result.get("control") or {}).get("history", [])
        if control:
            ax.plot([0] + [s for s, _ in control], [0.0] + [max(o - a for o, a in zip(orig, acc)) for _, acc in control],
                    color="black", linestyle=":", label="control (originals trained on)")
        ax.axhline(tolerance, color="gray", linestyle="--", label=f"tolerance {tolerance:g}")
        top = max([tolerance] + [max(o - a for o, a in zip(orig, acc)) for t in result["search"]["trials"] for _, acc in t["history"]])
        ax.set_ylim(top=min(top + 0.5, 8.0))
        ax.set_xlabel("joint retraining steps")
        ax.set_ylabel("worst task's drop from its original (points)")
        ax.set_title(result["title"], fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Sharing search (MTZ-hungarian)", fontsize=10)
    _save(fig, path)
    plt.close(fig)


def write_plots(results: dict, img_dir: str | os.PathLike) -> list[Path]:
    """Writes ``bench_<scenario>_accuracy.png``, ``bench_<scenario>_layers.png`` and ``bench_search.png``."""
    folder = check_writable_dir(img_dir)
    written = []
    for name, result in results["scenarios"].items():
        path = folder / f"bench_{name}_accuracy.png"
        _accuracy_plot(path, name, result)
        written.append(path)
        path = folder / f"bench_{name}_layers.png"
        _layers_plot(path, result)
        written.append(path)
    path = folder / "bench_search.png"
    _search_plot(path, results)
    written.append(path)
    return [p for p in written if p.exists()]
