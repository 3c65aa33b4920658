"""The whole chain on real data: zip -> retrain -> strip -> prune -> int8 -> one TFLite file.

Library behind ``examples/zip_prune_quantize_tflite.py`` (tests and notebooks import it):
two LeNet-5 trained on Fashion-MNIST classes 0-4 and 5-9 (cached by :mod:`tfmot_zip.apps.zoo`) are
zipped at full sharing with MTZ, retrained jointly for a few hundred steps, stripped to
standard layers, pruned with TFMOT to 80% sparsity while fine-tuning, quantized to int8
(post-training with representative data, or prune-preserving QAT), and exported to ONE TFLite
file with a signature per task. Every task's accuracy is then measured through the LiteRT
interpreter on its full test split, and size and latency are compared with the two separate
float models side by side (:func:`tfmot_zip.export.size.size_latency_report`).

A run takes minutes (``run(ChainConfig(out_dir="out/tflite_chain"))``, then
``report["targets"]`` says which target was met).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tfmot_zip.io import atomic_write_json, atomic_write_text, check_writable_dir, versions

__all__ = ["ChainConfig", "quick_config", "run", "render_markdown"]


@dataclass
class ChainConfig:
    """Settings of the chain; the defaults produce the figures of the report.

    Attributes:
        arch, tasks, seed: source models (``zoo.train_on_task(arch, task, seed=seed)``).
        train_samples, epochs: source-model training (None: the zoo defaults, full data).
        cache_dir: zoo cache (None: ``~/.cache/tfmot_zip``).
        sharing, selection, calibration_samples: ``zip_models`` arguments.
        retrain_steps, retrain_learning_rate: joint retraining of the zipped model (Adam;
            3e-4 recovers more in 600 steps than 1e-4: 91.1 / 96.8 against 89.5 / 96.0 after
            150 steps at 1e-4, task A / task B, %).
        target_sparsity, prune_steps, prune_end_fraction, prune_frequency,
        prune_learning_rate: TFMOT ``PolynomialDecay`` from 0 to ``target_sparsity`` over the
            first ``prune_end_fraction`` of ``prune_steps`` joint fine-tuning steps, masks
            updated every ``prune_frequency`` steps; Adam with a cosine decay from
            ``prune_learning_rate`` to a tenth of it.
        int8: "ptq" (post-training full-integer with ``representative_samples`` per task; the
            default: lossless here, and shared weights stay stored once) or "qat"
            (prune-preserving quantization-aware fine-tuning for ``qat_steps``; the converter
            then writes shared Dense kernels twice, see :mod:`tfmot_zip.export`).
        batch_size: examples per task per step.
        latency_runs: timed rounds of the latency comparison.
        verify_samples: test samples per task for :func:`~tfmot_zip.export.verify_tflite`.
        out_dir: where report.json, report.md and the .tflite files go.

    Example:
        >>> ChainConfig(int8="qat").qat_steps
        300
    """

    arch: str = "lenet5"
    tasks: tuple[str, str] = ("classes_0_4", "classes_5_9")
    seed: int = 0
    train_samples: int | None = None
    epochs: int | None = None
    cache_dir: str | None = None
    sharing: float = 1.0
    selection: str = "hungarian"
    calibration_samples: int = 5000
    retrain_steps: int = 600
    retrain_learning_rate: float = 3e-4
    target_sparsity: float = 0.8
    prune_steps: int = 3000
    prune_end_fraction: float = 0.4
    prune_frequency: int = 10
    prune_learning_rate: float = 1e-3
    int8: str = "ptq"
    representative_samples: int = 500
    qat_steps: int = 300
    qat_learning_rate: float = 5e-5
    batch_size: int = 128
    latency_runs: int = 500
    verify_samples: int = 1000
    out_dir: str = "out/tflite_chain"


def quick_config(**overrides) -> ChainConfig:
    """A shorter chain (about 1-2 minutes once the source models are cached).

    Example:
        >>> quick_config().retrain_steps
        300
    """
    settings = dict(
        calibration_samples=2000,
        retrain_steps=300,
        prune_steps=800,
        qat_steps=100,
        representative_samples=200,
        latency_runs=150,
        verify_samples=500,
    )
    settings.update(overrides)
    return ChainConfig(**settings)


TARGETS = {
    "float_bytes_vs_separate_float": 0.55,
    "int8_gzip_vs_separate_float_gzip": 0.08,
    "accuracy_drop_points": 1.5,
    "latency_shared_input_vs_separate": 0.6,
}


def _check_config(config: ChainConfig) -> None:
    if config.int8 not in ("ptq", "qat"):
        raise ValueError(f"Expected int8='ptq' or 'qat'. Received: int8={config.int8!r}")
    if not 0.0 < config.target_sparsity < 1.0:
        raise ValueError(f"Expected 0 < target_sparsity < 1. Received: target_sparsity={config.target_sparsity!r}")
    for name in ("retrain_steps", "prune_steps", "qat_steps", "prune_frequency", "latency_runs", "verify_samples",
                 "representative_samples", "calibration_samples", "batch_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "retrain_steps" else 1):
            raise ValueError(f"Expected a positive integer. Received: {name}={value!r}")


def _compile(model, learning_rate) -> None:
    """Adam (a float or a schedule) and one sparse cross-entropy per task output, by name."""
    from tfmot_zip.compat import keras

    names = list(model.output_names)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={n: keras.losses.SparseCategoricalCrossentropy() for n in names},
    )


def _sparsity(model) -> float:
    """Fraction of zero weights over the kernels of Dense/Conv2D layers."""
    from tfmot_zip.compat import keras

    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            kernel = layer.kernel.numpy()
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return zeros / total if total else 0.0


def run(config: ChainConfig = ChainConfig(), log: Callable[[str], None] = print) -> dict:
    """Runs the chain and writes ``report.json``, ``report.md`` and the TFLite files.

    Returns:
        The report (also in ``report.json``): per-stage accuracies, sizes, latencies, the
        targets and whether each was met, settings and versions.

    A run trains and exports real models (minutes; :func:`quick_config` for a shorter one),
    so there is no doctest here: ``run(quick_config(out_dir="out/quick"))``.
    """
    _check_config(config)
    out = check_writable_dir(config.out_dir)
    started = time.perf_counter()

    import tensorflow_model_optimization as tfmot

    import tfmot_zip
    from tfmot_zip import data
    from tfmot_zip.apps import zoo
    from tfmot_zip.compat import keras
    from tfmot_zip.export import export_tflite, tflite_accuracy, verify_tflite
    from tfmot_zip.export.size import format_report, gzip_size, size_latency_report
    from tfmot_zip.export.tfmot import quantize_zipped, shared_layers
    from tfmot_zip.model.copying import copy_model
    from tfmot_zip.training import compile_multitask, evaluate_tasks, retrain

    timings: dict[str, float] = {}

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 2)
        return now

    t = time.perf_counter()
    name_a, name_b = config.tasks
    log(f"[1/8] source models: {config.arch} on {name_a} and {name_b} (cached after the first run)")
    task_a, task_b = data.make_task(name_a), data.make_task(name_b)
    trained = [
        zoo.train_on_task(
            config.arch, task, seed=config.seed, epochs=config.epochs, cache_dir=config.cache_dir,
            max_train_samples=config.train_samples,
        )
        for task in (task_a, task_b)
    ]
    model_a, model_b = trained[0].model, trained[1].model
    tests = [task_a.test, task_b.test]
    original = [round(m.test_accuracy, 2) for m in trained]
    log(f"      original test accuracy: {original[0]:.2f} / {original[1]:.2f}")
    t = stage("source_models", t)

    log(f"[2/8] zip_models(sharing={config.sharing}, selection={config.selection!r})")
    n = config.calibration_samples
    zipped = tfmot_zip.zip_models(
        model_a, model_b,
        calibration_data=(task_a.x_train[:n], task_b.x_train[:n]),
        sharing=config.sharing, selection=config.selection, calibration_samples=n,
        task_names=list(config.tasks), seed=config.seed,
    )
    after_zip = [round(a, 2) for a in evaluate_tasks(zipped, tests)]
    log(f"      accuracy right after zipping: {after_zip[0]:.2f} / {after_zip[1]:.2f}")
    t = stage("zip", t)

    log(f"[3/8] joint retraining: {config.retrain_steps} steps, Adam {config.retrain_learning_rate:g}")
    compile_multitask(zipped, config.retrain_learning_rate)
    retrain(zipped, [task_a.train, task_b.train], config.retrain_steps, batch_size=config.batch_size, seed=config.seed)
    after_retrain = [round(a, 2) for a in evaluate_tasks(zipped, tests)]
    log(f"      accuracy after retraining: {after_retrain[0]:.2f} / {after_retrain[1]:.2f}")
    t = stage("retrain", t)

    log("[4/8] strip_zipping -> standard layers; float TFLite vs the separate float models")
    plain = tfmot_zip.strip_zipping(zipped)
    probe = [task_a.x_test[:256], task_b.x_test[:256]]
    strip_error = float(max(np.max(np.abs(np.asarray(u) - np.asarray(v))) for u, v in zip(zipped(probe), plain(probe))))
    shared_blocks = shared_layers(plain)
    float_tflite = export_tflite(plain, out / "zipped_float.tflite")
    separate_float = [export_tflite(m) for m in (model_a, model_b)]
    verify_tflite(float_tflite, plain, [x[: config.verify_samples] for x, _ in tests])
    float_report = size_latency_report(
        plain, [model_a, model_b], probe, runs=config.latency_runs,
        zipped_tflite=float_tflite, separate_tflite=separate_float,
    )
    log(format_report(float_report))
    t = stage("strip_and_float_export", t)

    log(f"[5/8] prune_low_magnitude to {config.target_sparsity:.0%} while fine-tuning ({config.prune_steps} steps)")
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=config.target_sparsity, begin_step=0,
        end_step=max(1, int(config.prune_end_fraction * config.prune_steps)), frequency=config.prune_frequency,
    )
    pruning = tfmot.sparsity.keras.prune_low_magnitude(copy_model(plain), pruning_schedule=schedule)
    _compile(pruning, keras.optimizers.schedules.CosineDecay(config.prune_learning_rate, config.prune_steps, alpha=0.1))
    retrain(
        pruning, [task_a.train, task_b.train], config.prune_steps, batch_size=config.batch_size,
        seed=config.seed + 1, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    pruned = tfmot.sparsity.keras.strip_pruning(pruning)
    sparsity = _sparsity(pruned)
    after_prune = [round(a, 2) for a in evaluate_tasks(pruned, tests)]
    pruned_shared = shared_layers(pruned)
    log(f"      sparsity {sparsity:.3f}; accuracy {after_prune[0]:.2f} / {after_prune[1]:.2f}; "
        f"shared blocks kept: {sorted(pruned_shared) == sorted(shared_blocks)}")
    t = stage("prune", t)

    rep = [task_a.x_train[-config.representative_samples:], task_b.x_train[-config.representative_samples:]]
    if config.int8 == "qat":
        log(f"[6/8] prune-preserving QAT: {config.qat_steps} steps, then int8 conversion")
        export_model = quantize_zipped(pruned, preserve_sparsity=True)
        compile_multitask(export_model, config.qat_learning_rate)
        retrain(export_model, [task_a.train, task_b.train], config.qat_steps, batch_size=config.batch_size, seed=config.seed + 2)
        int8_tflite = export_tflite(export_model, out / "zipped_pruned_int8.tflite", quantize="int8")
    else:
        log(f"[6/8] post-training int8 with {config.representative_samples} representative samples per task")
        export_model = pruned
        int8_tflite = export_tflite(
            pruned, out / "zipped_pruned_int8.tflite", quantize="int8", representative_data=rep,
            representative_samples=config.representative_samples,
        )
    verification = verify_tflite(
        int8_tflite, export_model, [x[: config.verify_samples] for x, _ in tests], quantize="int8"
    )
    t = stage("int8", t)

    log("[7/8] accuracy of every task through the LiteRT interpreter (full test splits)")
    tflite_acc = [
        round(tflite_accuracy(int8_tflite, task, x, y)[task], 2)
        for task, (x, y) in zip(config.tasks, tests)
    ]
    float_tflite_acc = [
        round(tflite_accuracy(float_tflite, task, x, y)[task], 2)
        for task, (x, y) in zip(config.tasks, tests)
    ]
    common = min(len(y) for _, y in tests)  # "all_tasks" runs both tasks on equally many samples
    shared_acc = tflite_accuracy(
        int8_tflite, "all_tasks",
        {f"{k}_input": x[:common] for k, (x, _) in zip(config.tasks, tests)},
        {k: y[:common] for k, (_, y) in zip(config.tasks, tests)},
    )
    drops = [round(o - a, 2) for o, a in zip(original, tflite_acc)]
    log(f"      int8 TFLite accuracy: {tflite_acc[0]:.2f} / {tflite_acc[1]:.2f} (drop {drops[0]:+.2f} / {drops[1]:+.2f} points)")
    t = stage("tflite_accuracy", t)

    log("[8/8] size and latency of the int8 file vs the separate models")
    separate_int8 = [
        export_tflite(m, quantize="int8", representative_data=r, representative_samples=config.representative_samples)
        for m, r in zip((model_a, model_b), rep)
    ]
    int8_report = size_latency_report(
        pruned, [model_a, model_b], probe, quantize="int8", runs=config.latency_runs,
        zipped_tflite=int8_tflite, separate_tflite=separate_int8,
    )
    log(format_report(int8_report))
    t = stage("int8_size_latency", t)

    separate_float_bytes = sum(len(b) for b in separate_float)
    separate_float_gzip = sum(gzip_size(b) for b in separate_float)
    figures = {
        "float_bytes_vs_separate_float": len(float_tflite) / separate_float_bytes,
        "int8_gzip_vs_separate_float_gzip": gzip_size(int8_tflite) / separate_float_gzip,
        "accuracy_drop_points": max(drops),
        "latency_shared_input_vs_separate": float_report["ratios"]["latency_all_tasks_shared_input"],
        "latency_shared_input_vs_separate_int8": int8_report["ratios"]["latency_all_tasks_shared_input"],
    }
    targets = {
        key: {"value": round(figures[key], 4), "target": bound, "met": bool(figures[key] <= bound)}
        for key, bound in TARGETS.items()
    }
    report = {
        "config": dataclasses.asdict(config),
        "tasks": list(config.tasks),
        "accuracy": {
            "original": original,
            "after_zip": after_zip,
            "after_retrain": after_retrain,
            "after_prune": after_prune,
            "tflite_float": float_tflite_acc,
            "tflite_int8_all_tasks": [round(shared_acc[k], 2) for k in config.tasks],
            "tflite_int8": tflite_acc,
            "drop_points": drops,
        },
        "retraining_steps": {
            "joint_retrain": config.retrain_steps,
            "prune_fine_tune": config.prune_steps,
            "qat": config.qat_steps if config.int8 == "qat" else 0,
            "original_training_each": [m.train_steps for m in trained],
        },
        "strip_max_abs_error": strip_error,
        "shared_blocks": shared_blocks,
        "shared_blocks_after_pruning": pruned_shared,
        "sparsity": round(sparsity, 4),
        "bytes": {
            "separate_float": [len(b) for b in separate_float],
            "separate_float_gzip": [gzip_size(b) for b in separate_float],
            "zipped_float": len(float_tflite),
            "zipped_float_gzip": gzip_size(float_tflite),
            "separate_int8": [len(b) for b in separate_int8],
            "separate_int8_gzip": [gzip_size(b) for b in separate_int8],
            "zipped_pruned_int8": len(int8_tflite),
            "zipped_pruned_int8_gzip": gzip_size(int8_tflite),
        },
        "int8_verification": {
            key: {"max_abs_error": value["max_abs_error"], "argmax_agreement": value["argmax_agreement"]}
            for key, value in verification.items()
        },
        "float_report": float_report,
        "int8_report": int8_report,
        "targets": targets,
        "seconds": {**timings, "total": round(time.perf_counter() - started, 1)},
        "versions": versions(),
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    log(f"wrote {out / 'report.md'}, {out / 'report.json'} and the .tflite files")
    return report


def render_markdown(report: dict) -> str:
    """The Markdown report of :func:`run` (the ``report.md`` it writes from its report dict).

    Needs every key :func:`run` writes, so it is exercised with the chain itself:
    ``render_markdown(run(config))``.
    """
    acc = report["accuracy"]
    tasks = report["tasks"]
    config = report["config"]
    lines = [
        "# Zip -> prune -> int8 -> one TFLite file",
        "",
        f"{config['arch']} on Fashion-MNIST {tasks[0]} and {tasks[1]}, zipped with MTZ at sharing "
        f"{config['sharing']}, {config['retrain_steps']} joint retraining steps, pruned to "
        f"{config['target_sparsity']:.0%} ({config['prune_steps']} fine-tuning steps), int8 by "
        f"{'prune-preserving QAT' if config['int8'] == 'qat' else 'post-training quantization'}. "
        "Accuracies on the full test split of each task (%), TFLite ones through the LiteRT interpreter.",
        "",
        f"| stage | {tasks[0]} | {tasks[1]} |",
        "|---|---|---|",
    ]
    for key, label in (
        ("original", "original separate models"),
        ("after_zip", "zipped, no retraining"),
        ("after_retrain", "zipped, after joint retraining"),
        ("tflite_float", "TFLite float32 (per-task signatures)"),
        ("after_prune", f"pruned to {report['sparsity']:.1%} sparsity (Keras)"),
        ("tflite_int8", "TFLite int8, pruned (per-task signatures)"),
        ("drop_points", "drop vs original (points)"),
    ):
        lines.append(f"| {label} | {acc[key][0]:.2f} | {acc[key][1]:.2f} |")
    lines += ["", "## Targets", "", "| figure | value | target | met |", "|---|---|---|---|"]
    labels = {
        "float_bytes_vs_separate_float": "float TFLite bytes, zipped / two separate",
        "int8_gzip_vs_separate_float_gzip": "pruned int8 gzipped bytes / two separate float gzipped",
        "accuracy_drop_points": "largest accuracy drop of the int8 TFLite (points)",
        "latency_shared_input_vs_separate": "latency, all tasks on one shared input / separate in sequence (float)",
    }
    for key, label in labels.items():
        target = report["targets"][key]
        lines.append(f"| {label} | {target['value']:.3f} | <= {target['target']} | {'yes' if target['met'] else 'no'} |")
    b = report["bytes"]
    lines += [
        "",
        "## Bytes",
        "",
        "| file | raw | gzipped |",
        "|---|---|---|",
        f"| two separate float models | {sum(b['separate_float']):,} | {sum(b['separate_float_gzip']):,} |",
        f"| zipped float (4 signatures) | {b['zipped_float']:,} | {b['zipped_float_gzip']:,} |",
        f"| two separate int8 models (not pruned) | {sum(b['separate_int8']):,} | {sum(b['separate_int8_gzip']):,} |",
        f"| zipped, pruned, int8 (4 signatures) | {b['zipped_pruned_int8']:,} | {b['zipped_pruned_int8_gzip']:,} |",
        "",
        "## Latency (LiteRT, batch 1, 1 thread, median of interleaved runs, ms)",
        "",
        "| signature | zipped float | separate float | zipped int8 | separate int8 |",
        "|---|---|---|---|---|",
    ]
    fr, ir = report["float_report"], report["int8_report"]
    for t, task in enumerate(tasks):
        lines.append(
            f"| {task} | {fr['zipped']['signatures'][task]['invoke_ms']:.4f} | {fr['separate'][t]['latency']['invoke_ms']:.4f} "
            f"| {ir['zipped']['signatures'][task]['invoke_ms']:.4f} | {ir['separate'][t]['latency']['invoke_ms']:.4f} |"
        )
    for key in ("all_tasks", "all_tasks_shared_input"):
        lines.append(
            f"| {key} (vs separate in sequence) | {fr['zipped']['signatures'][key]['invoke_ms']:.4f} | "
            f"{fr['separate_total']['latency_sequential']['invoke_ms']:.4f} | {ir['zipped']['signatures'][key]['invoke_ms']:.4f} | "
            f"{ir['separate_total']['latency_sequential']['invoke_ms']:.4f} |"
        )
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    lines += ["", f"Run time: {report['seconds']['total']} s. {versions}.", ""]
    return "\n".join(lines)
