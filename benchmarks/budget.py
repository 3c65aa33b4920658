"""Sharing given as a parameter budget: automatic allocation against the uniform fraction with the same parameters.

For every pair (cached zoo models, Fashion-MNIST, 10,000 calibration images per task), zips once
with ``sharing=Budget(fraction=...)`` (each hidden layer's drift measured by zipping it alone,
then the allocation) and once with the single fraction whose stripped parameter count is the
largest that fits the same budget, with the same options on both sides, and prints the budget,
the per-layer fractions, the parameters (``strip_zipping(zipped).count_params()``) and each task's
test accuracy right after zipping (no retraining), with the mean drop against the originals.

Usage:
    .venv/bin/python benchmarks/budget.py [--fraction 0.6] [--pairs lenet_300_100:split,lenet5:split,lenet_300_100:same]
        [--no-refit] [--json out/budget.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_PAIRS = "lenet_300_100:split,lenet5:split,lenet_300_100:same"


def load_pair(arch: str, pair: str):
    """The two cached originals of a zoo pair and their tasks (trains only if nothing is cached)."""
    from tfmot_zip import data
    from tfmot_zip.apps import zoo

    if pair == "split":
        tasks, seeds = [data.make_task("classes_0_4"), data.make_task("classes_5_9")], (0, 0)
    else:
        tasks, seeds = [data.make_task("all", seed=0), data.make_task("all", seed=1)], (0, 1)
    return [zoo.train_on_task(arch, t, seed=s) for t, s in zip(tasks, seeds)], tasks


def run_pair(arch: str, pair: str, fraction: float, refit: bool, samples: int = 10_000, log=print) -> dict:
    """Automatic allocation and uniform fraction at one budget; returns the row."""
    import numpy as np

    import tfmot_zip
    from tfmot_zip import training
    from tfmot_zip.zipping.budget import Budget, uniform_for_budget

    trained, tasks = load_pair(arch, pair)
    models = [t.model for t in trained]
    originals = [t.test_accuracy for t in trained]
    calibration = [t.x_train[:samples] for t in tasks]
    options = {"method": "mtz", "refit_layers": refit, "refit_heads": refit}
    budget = Budget(fraction=fraction)

    def measure(sharing) -> tuple[dict, float]:
        start = time.perf_counter()
        zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=sharing, **options)
        seconds = time.perf_counter() - start
        accuracy = training.evaluate_tasks(zipped, [t.test for t in tasks])
        return {
            "params": int(tfmot_zip.strip_zipping(zipped).count_params()),
            "accuracy": [round(a, 2) for a in accuracy],
            "mean_drop": round(float(np.mean([o - a for o, a in zip(originals, accuracy)])), 2),
            "zip_seconds": round(seconds, 1),
            "report": tfmot_zip.zip_summary(zipped).budget,
        }, seconds

    auto, _ = measure(budget)
    allocation = auto.pop("report")
    uniform_fraction, uniform_params = uniform_for_budget(models, budget)
    uniform, _ = measure(uniform_fraction)
    uniform.pop("report")
    row = {
        "arch": arch, "pair": pair, "refit": refit, "originals": [round(o, 2) for o in originals],
        "params_original": allocation["params_original"], "budget": allocation["budget"],
        "auto": {**auto, "fractions": {k: round(v, 3) for k, v in allocation["fractions"].items()},
                 "params_counted": allocation["params"], "drift": allocation["drift"],
                 "checked": allocation["checked"], "chosen": allocation["chosen"]},
        "uniform": {**uniform, "fraction": uniform_fraction, "params_counted": uniform_params},
    }
    shares = ", ".join(f"{k} {v:.2f}" for k, v in row["auto"]["fractions"].items())
    log(f"| {arch} {pair} | {row['budget']:,} ({fraction:.0%} of {row['params_original']:,}) | {shares} "
        f"({allocation['chosen']}) | "
        f"{auto['params']:,} | {auto['mean_drop']:.2f} | {uniform_fraction:.3f} | {uniform['params']:,} | "
        f"{uniform['mean_drop']:.2f} | {auto['zip_seconds']:.0f} / {uniform['zip_seconds']:.0f} |")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.6, help="budget as a fraction of the two originals' parameters")
    parser.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma-separated arch:split|same")
    parser.add_argument("--no-refit", action="store_true", help="plain MTZ on both sides (default: layer and head refits)")
    parser.add_argument("--json", default="out/budget.json", help="where to write the rows")
    args = parser.parse_args()
    refit = not args.no_refit
    print(f"options on both sides: method=mtz, refit_layers={refit}, refit_heads={refit}")
    print("| pair | budget | automatic allocation | params | mean drop | uniform fraction | params | mean drop | zip s auto / uniform |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [run_pair(*p.split(":"), fraction=args.fraction, refit=refit) for p in args.pairs.split(",")]
    from tfmot_zip.io import atomic_write_json, versions

    atomic_write_json(args.json, {"fraction": args.fraction, "refit": refit, "rows": rows, "versions": versions()})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
