"""The main job: zip two pre-trained LeNet-300-100 on Fashion-MNIST, retrain, report.

Library functions (``DemoConfig``, ``run_demo``) so that the example script, the CLI and the
tests share them. Trains the two source models once (cached), zips them at every sharing
fraction with each recipe of :data:`RECIPES` (the paper's MTZ, MTZ with the data-driven refits
that go past the paper and are ``zip_models``' default, the Euclidean baseline), retrains the
default recipe's models lightly, exports the most shared retrained model to TFLite, and writes ``report.md``, ``report.json`` and PNG plots.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from tfmot_zip.io import atomic_write_json, atomic_write_text, check_writable_dir, versions

__all__ = ["DemoConfig", "RECIPES", "run_demo", "render_markdown"]

#: Named ways to zip: ``zip_models`` keyword arguments. "mtz" is the paper's method exactly.
RECIPES: dict[str, dict] = {
    "mtz": {"method": "mtz"},
    "mtz+refits": {"method": "mtz+refits"},
    "euclidean": {"method": "euclidean"},
}


@dataclass
class DemoConfig:
    """Settings of the demo; defaults reproduce the README figures."""

    arch: str = "lenet_300_100"
    tasks: tuple[str, str] = ("classes_0_4", "classes_5_9")
    seed: int = 0
    sharings: tuple[float, ...] = (0.5, 1.0)
    methods: tuple[str, ...] = ("mtz", "mtz+refits", "euclidean")  # names of RECIPES
    retrain_method: str = "mtz+refits"  # the recipe retrained and exported: zip_models' default
    selection: str = "hungarian"
    calibration_samples: int = 10_000
    retrain_steps: int = 300
    eval_every: int = 100
    learning_rate: float = 1e-3  # Adam, cosine decay to 0 over the retraining steps
    batch_size: int = 128
    out_dir: str = "out/demo"
    cache_dir: str | None = None
    export_tflite: bool = True
    train_samples: int | None = None  # subsample the source models' training (tests)
    epochs: int | None = None


def run_demo(config: DemoConfig = DemoConfig(), log: Callable[[str], None] = print) -> dict:
    """Runs the demo end to end and returns the report dict (also written to ``out_dir``).

    It trains two LeNet-300-100 (cached after the first run), so it takes minutes: it is what
    ``bash scripts/demo.sh`` runs. ``run_demo(DemoConfig(out_dir="out/demo"))["retrained"]["1.0"]["accuracy"]``
    is the per-task accuracy (percent) after joint retraining at sharing 1.0, e.g. ``[90.36, 97.04]``.
    """
    import tfmot_zip
    from tfmot_zip import data, training
    from tfmot_zip.report import plots
    from tfmot_zip.apps import zoo

    unknown = [m for m in config.methods if m not in RECIPES]
    if unknown:
        raise ValueError(f"Unknown demo method {unknown[0]!r}; expected one of {sorted(RECIPES)}.")
    if config.retrain_method not in config.methods:
        raise ValueError(
            f"retrain_method {config.retrain_method!r} is not among the zipped methods {list(config.methods)}; "
            "add it to methods or choose one of them."
        )
    out = check_writable_dir(config.out_dir)
    started = time.perf_counter()
    tasks = [data.make_task(name) for name in config.tasks]
    log(f"[1/5] source models: {config.arch} on {', '.join(config.tasks)} (trained once, then cached)")
    trained = [
        zoo.train_on_task(config.arch, task, seed=config.seed, cache_dir=config.cache_dir,
                          max_train_samples=config.train_samples, epochs=config.epochs)
        for task in tasks
    ]
    models = [t.model for t in trained]
    tests = [task.test for task in tasks]
    originals = [round(t.test_accuracy, 2) for t in trained]
    names = [m.name for m in models]
    log(f"      original test accuracy: {originals[0]:.2f} / {originals[1]:.2f}; trained {trained[0].train_steps} steps each")
    calibration = [task.x_train[: config.calibration_samples] for task in tasks]
    report: dict = {
        "config": dataclasses.asdict(config),
        "versions": versions(),
        "task_names": names,
        "tasks": list(config.tasks),
        "original_accuracy": originals,
        "original_train_steps": [t.train_steps for t in trained],
        "params_separate": int(sum(m.count_params() for m in models)),
        "zipped": {},
        "retrained": {},
        "retrain_method": config.retrain_method,
    }
    log("[2/5] zipping (no retraining)")
    best = None
    for fraction in config.sharings:
        for method in config.methods:
            zipped = tfmot_zip.zip_models(
                *models, calibration_data=calibration, sharing=fraction, selection=config.selection,
                seed=config.seed, **RECIPES[method],
            )
            accuracy = [round(a, 2) for a in training.evaluate_tasks(zipped, tests)]
            summary = tfmot_zip.zip_summary(zipped)
            report["zipped"].setdefault(str(fraction), {})[method] = {
                "accuracy": accuracy,
                "drop": [round(o - a, 2) for o, a in zip(originals, accuracy)],
                "zip_seconds": round(summary.zip_seconds or 0.0, 3),
                "params": summary.params_zipped,
                "layers": [l.as_dict() for l in summary.layers],
            }
            log(f"      sharing {fraction:.2f} {method:<11} accuracy {accuracy[0]:6.2f} / {accuracy[1]:6.2f}   "
                f"params {summary.params_zipped:,}   zipped in {summary.zip_seconds:.1f} s")
            if method == config.retrain_method:
                log(f"[3/5] joint retraining ({method}), sharing {fraction:.2f}: {config.retrain_steps} steps (one batch of each task per step)")
                training.compile_multitask(zipped, config.learning_rate, decay_steps=max(1, config.retrain_steps))
                history = training.retrain(
                    zipped, [task.train for task in tasks], config.retrain_steps, config.learning_rate,
                    batch_size=config.batch_size, seed=config.seed, eval_every=config.eval_every, tests=tests,
                )
                final = [round(a, 2) for a in history[-1][1]] if history else accuracy
                report["retrained"][str(fraction)] = {
                    "steps": config.retrain_steps,
                    "accuracy": final,
                    "drop": [round(o - a, 2) for o, a in zip(originals, final)],
                    "history": [[s, [round(a, 2) for a in accs]] for s, accs in history],
                    "steps_vs_original": round(config.retrain_steps / trained[0].train_steps, 4),
                }
                log(f"      after {config.retrain_steps} steps: {final[0]:.2f} / {final[1]:.2f} "
                    f"({config.retrain_steps / trained[0].train_steps:.1%} of one original's training)")
                if best is None or fraction >= best[0]:
                    best = (fraction, zipped, summary)
    log("[4/5] strip and export")
    fraction, zipped, summary = best
    zipped.save(out / "zipped.keras")
    plain = tfmot_zip.strip_zipping(zipped)
    report["stripped_params"] = int(plain.count_params())
    report["summary_text"] = str(summary)
    if config.export_tflite:
        from tfmot_zip.export import export_tflite

        tflite_bytes = export_tflite(plain, out / "zipped.tflite")
        report["tflite_bytes"] = len(tflite_bytes)
        log(f"      wrote {out / 'zipped.tflite'} ({len(tflite_bytes):,} bytes)")
    log("[5/5] report")
    series = {"original": originals}
    for fraction in config.sharings:
        for method in config.methods:
            series[f"{method} f={fraction:g}"] = report["zipped"][str(fraction)][method]["accuracy"]
        if str(fraction) in report["retrained"]:
            series[f"{config.retrain_method} f={fraction:g} + {config.retrain_steps} steps"] = report["retrained"][str(fraction)]["accuracy"]
    plots.accuracy_bars(out / "accuracy.png", list(config.tasks), series, title=f"{config.arch}: {' vs '.join(config.tasks)}")
    plots.sharing_bars(out / "sharing.png", report["zipped"][str(fraction)][config.retrain_method]["layers"],
                       title=f"{config.retrain_method} sharing {fraction:g}")
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def render_markdown(report: dict) -> str:
    """The Markdown report of a demo run (tables of accuracy, sharing and sizes)."""
    tasks = report["tasks"]
    orig = report["original_accuracy"]
    lines = [
        f"# tfmot_zip demo: {report['config']['arch']} on Fashion-MNIST ({' vs '.join(tasks)})",
        "",
        f"Originals: {orig[0]:.2f} / {orig[1]:.2f} % test accuracy, trained {report['original_train_steps'][0]} steps each; "
        f"{report['params_separate']:,} parameters together.",
        "",
        "## Right after zipping (no retraining)",
        "",
        f"| sharing | method | {tasks[0]} | {tasks[1]} | average drop | parameters | zip time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for fraction, methods in report["zipped"].items():
        for method, r in methods.items():
            lines.append(
                f"| {float(fraction):.2f} | {method} | {r['accuracy'][0]:.2f} | {r['accuracy'][1]:.2f} | "
                f"{sum(r['drop']) / 2:.2f} | {r['params']:,} | {r['zip_seconds']:.2f} |"
            )
    lines += ["", f"## After light joint retraining ({report.get('retrain_method', 'mtz')})", "",
              f"| sharing | steps | steps / one original's training | {tasks[0]} | {tasks[1]} | drop |", "|---|---|---|---|---|---|"]
    for fraction, r in report["retrained"].items():
        lines.append(
            f"| {float(fraction):.2f} | {r['steps']} | {r['steps_vs_original']:.1%} | {r['accuracy'][0]:.2f} | "
            f"{r['accuracy'][1]:.2f} | {r['drop'][0]:+.2f} / {r['drop'][1]:+.2f} |"
        )
    lines += ["", "## Sharing per layer (most shared model)", "", "```", report.get("summary_text", ""), "```", ""]
    if "tflite_bytes" in report:
        lines += [f"TFLite file: {report['tflite_bytes']:,} bytes (float32, one signature per task).", ""]
    lines += ["![accuracy](accuracy.png)", "", "![sharing](sharing.png)", "",
              f"Versions: {report['versions']}. Run time {report.get('seconds', '?')} s.", ""]
    return "\n".join(lines)
