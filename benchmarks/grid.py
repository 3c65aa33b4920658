"""The grid: every zipping strategy at every sharing fraction, zipped and after light retraining.

Per row: accuracy right after zipping and after a fixed light joint retraining, parameters,
zipping time and per-layer sharing.
"""
from __future__ import annotations

import time
from typing import Sequence

from benchmarks.context import Context, accuracy_drops, round_accuracies, train_with_checkpoints
from benchmarks.scenarios import BEST_BASELINE, Scenario, strategy

__all__ = ["run_grid"]


def _to_retrain(scenario: Scenario, fraction: float, rows: Sequence[dict]) -> set[str]:
    """Labels retrained at this fraction; ``best-baseline`` picks the baseline best right after zipping."""
    if scenario.retrain_steps <= 0 or (scenario.retrain_fractions is not None and fraction not in scenario.retrain_fractions):
        return set()
    chosen = {label for label in scenario.retrain_strategies if label != BEST_BASELINE}
    if BEST_BASELINE in scenario.retrain_strategies:
        baselines = [r for r in rows if strategy(r["strategy"]).is_baseline]
        if baselines:
            chosen.add(max(baselines, key=lambda r: sum(r["zipped"]["accuracy"]))["strategy"])
    return chosen


def run_grid(ctx: Context) -> list[dict]:
    """Every strategy at every fraction: accuracy zipped and after ``retrain_steps`` joint steps.

    Per fraction, every strategy is zipped and evaluated first, then the retrained ones are
    retrained on the same batches (so ``best-baseline`` can be chosen from the zipped accuracy).
    """
    from tfmot_zip import training

    scenario, config = ctx.scenario, ctx.config
    rows: list[dict] = []
    total = len(scenario.fractions) * len(scenario.strategies)
    for fraction in scenario.fractions:
        models = {}
        here: list[dict] = []
        for label in scenario.strategies:
            spec = strategy(label)
            zipped, summary = ctx.zip(fraction, label)
            accuracy = round_accuracies(training.evaluate_tasks(zipped, ctx.tests))
            row = {
                "strategy": label,
                "method": spec.method,
                "selection": spec.selection,
                "options": dict(spec.options),
                "fraction": fraction,
                "zipped": {"accuracy": accuracy, "drop": accuracy_drops(ctx.original_accuracy, accuracy)},
                "retrained": None,
                "params_zipped": summary.params_zipped,
                "shared_params": summary.shared_params,
                "shared_over_one_network": round(summary.shared_params / ctx.one_network_params, 4),
                "zip_seconds": round(summary.zip_seconds or 0.0, 3),
                "layers": [layer.as_dict() for layer in summary.layers],
            }
            ctx.log(
                f"    [{len(rows) + len(here) + 1}/{total}] f={fraction:<5g} {label:<14} zipped "
                f"{accuracy[0]:6.2f} / {accuracy[1]:6.2f}  ({row['zip_seconds']:.1f} s)"
            )
            models[label] = zipped
            here.append(row)
        chosen = _to_retrain(scenario, fraction, here)
        for row in here:
            if row["strategy"] not in chosen:
                continue
            start = time.perf_counter()
            history = train_with_checkpoints(
                models[row["strategy"]], ctx.train_sets, [scenario.retrain_steps], ctx.tests, config.learning_rate,
                config.batch_size, config.seed,
            )
            final = history[-1][1]
            row["retrained"] = {
                "steps": scenario.retrain_steps,
                "accuracy": final,
                "drop": accuracy_drops(ctx.original_accuracy, final),
                "seconds": round(time.perf_counter() - start, 2),
            }
            ctx.log(
                f"        f={fraction:<5g} {row['strategy']:<14} after {scenario.retrain_steps} joint steps "
                f"{final[0]:6.2f} / {final[1]:6.2f}"
            )
        rows += here
    return rows
