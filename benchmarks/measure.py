"""Runs a :class:`~benchmarks.scenarios.BenchConfig` and returns the results as one dict.

Small pure-ish functions (Flax-examples style) so that ``run.py`` only parses flags and the test
can run one tiny scenario. Per scenario (:func:`run_scenario`), on a :class:`~benchmarks.context.Context`:

- :func:`~benchmarks.grid.run_grid`: every strategy at every sharing fraction, accuracy right
  after zipping and after a fixed light joint retraining, parameters, zipping time, per-layer sharing.
- :func:`~benchmarks.references.run_control` and :func:`~benchmarks.references.run_scratch`: the
  unzipped originals trained on with the retraining recipe, and a fully shared network of the
  same architecture trained jointly from scratch.
- :func:`~benchmarks.sharing_search.run_search`: the largest sharing at which MTZ-hungarian
  keeps every task within ``search_tolerance`` points of its original after at most
  ``search_max_steps`` joint steps.

The versions, machine and CPU time come from :mod:`benchmarks.environment`. The helpers that
scripts and tests use are re-exported here.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from benchmarks.context import Context, Log, evaluate_models, train_with_checkpoints
from benchmarks.environment import cpu_seconds, machine_info, probe_resnet, versions
from benchmarks.grid import run_grid
from benchmarks.references import fully_shared_network, run_control, run_scratch, separate_models
from benchmarks.scenarios import BenchConfig, Scenario
from benchmarks.sharing_search import run_search

__all__ = [
    "machine_info",
    "versions",
    "probe_resnet",
    "evaluate_models",
    "train_with_checkpoints",
    "separate_models",
    "fully_shared_network",
    "run_grid",
    "run_scratch",
    "run_control",
    "run_search",
    "run_scenario",
    "run_benchmark",
]


def run_scenario(scenario: Scenario, config: BenchConfig, log: Log = print) -> dict:
    """Everything measured on one pair of models."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    log(f"== {scenario.name}: {scenario.title}")
    ctx = Context(scenario, config, log)
    seconds = {"originals": round(time.perf_counter() - started, 1)}
    cpu = {"originals": round(cpu_seconds() - cpu_started, 1)}
    log(
        f"    originals {ctx.names[0]} / {ctx.names[1]}: {ctx.original_accuracy[0]:.2f} / {ctx.original_accuracy[1]:.2f} %, "
        f"trained {ctx.trained[0].train_steps} / {ctx.trained[1].train_steps} steps, {ctx.one_network_params:,} parameters each"
        + ("" if ctx.bn_recalibrated_accuracy is None else
           f"; with BatchNorm statistics re-estimated: {ctx.bn_recalibrated_accuracy[0]:.2f} / {ctx.bn_recalibrated_accuracy[1]:.2f} %")
    )
    result = {
        "title": scenario.title,
        "arch": scenario.arch,
        "tasks": list(scenario.tasks),
        "task_names": ctx.names,
        "seeds": list(scenario.seeds),
        "calibration_samples": scenario.calibration_samples,
        "test_samples": [len(y) for _, y in ctx.tests],
        "originals": {
            "accuracy": ctx.original_accuracy,
            "bn_recalibrated_accuracy": ctx.bn_recalibrated_accuracy,
            "train_steps": [t.train_steps for t in ctx.trained],
            "train_samples": scenario.train_samples,
            "epochs": scenario.epochs,
            "params_each": [int(m.count_params()) for m in ctx.models],
            "params_separate": int(sum(m.count_params() for m in ctx.models)),
        },
    }

    def phase(name: str, measure: Callable[[], Optional[object]]) -> None:
        """``result[name] = measure()``, with its wall and CPU seconds."""
        wall, cpu_phase = time.perf_counter(), cpu_seconds()
        result[name] = measure()
        seconds[name] = round(time.perf_counter() - wall, 1)
        cpu[name] = round(cpu_seconds() - cpu_phase, 1)

    phase("grid", lambda: run_grid(ctx))
    phase("control", lambda: run_control(ctx))
    phase("search", lambda: run_search(ctx, result["control"]))
    phase("scratch", lambda: run_scratch(ctx))
    seconds["total"] = round(time.perf_counter() - started, 1)
    cpu["total"] = round(cpu_seconds() - cpu_started, 1)
    result["seconds"] = seconds
    result["cpu_seconds"] = cpu
    log(f"    {scenario.name} done in {seconds['total']:.0f} s ({cpu['total']:.0f} s of CPU time: " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items() if k != "total") + ")")
    return result


def run_benchmark(
    config: BenchConfig,
    log: Log = print,
    on_update: Optional[Callable[[dict], None]] = None,
    resnet_probe: Optional[dict] = None,
) -> dict:
    """Runs every scenario of ``config``; ``on_update(results)`` after each (to save partial results)."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    results = {
        "schema": 1,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv and sys.argv[0] else None,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.as_dict(),
        "versions": versions(),
        "machine": machine_info(),
        "resnet_probe": resnet_probe,
        "scenarios": {},
        "complete": False,
    }
    for scenario in config.scenarios:
        results["scenarios"][scenario.name] = run_scenario(scenario, config, log)
        results["seconds"] = round(time.perf_counter() - started, 1)
        results["cpu_seconds"] = round(cpu_seconds() - cpu_started, 1)
        if on_update is not None:
            on_update(results)
    results["complete"] = True
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["cpu_seconds"] = round(cpu_seconds() - cpu_started, 1)
    results["machine_at_end"] = machine_info()
    if on_update is not None:
        on_update(results)
    return results
