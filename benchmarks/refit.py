"""Data-driven refits after a one-shot zip, side by side with the paper's MTZ (issue: beyond the paper).

Zips two cached zoo models (Fashion-MNIST, 10,000 calibration images per task) at sharing 0.5 and
1.0 with ``method`` x {no refit, head refit, layer refit, both} and prints each task's test
accuracy right after zipping (no retraining), the mean drop against the originals and the zip
time (measured in the same run, so the ratios are comparable).

Usage:
    .venv/bin/python benchmarks/refit.py [--arch lenet_300_100] [--pair split|same]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = (
    ("mtz", False, False), ("mtz", False, True), ("mtz", True, False), ("mtz", True, True),
    ("euclidean", False, False), ("euclidean", True, True),
)


def run(arch: str, pair: str, samples: int = 10_000, log=print) -> list[dict]:
    """Every variant at sharing 0.5 and 1.0; returns one dict per row."""
    import numpy as np

    import tfmot_zip
    from tfmot_zip import data, training
    from tfmot_zip.apps import zoo

    if pair == "split":
        tasks, seeds = [data.make_task("classes_0_4"), data.make_task("classes_5_9")], (0, 0)
    else:
        tasks, seeds = [data.make_task("all", seed=0), data.make_task("all", seed=1)], (0, 1)
    trained = [zoo.train_on_task(arch, t, seed=s) for t, s in zip(tasks, seeds)]
    models = [t.model for t in trained]
    originals = [round(t.test_accuracy, 2) for t in trained]
    log(f"{arch} {pair}: originals {originals[0]:.2f} / {originals[1]:.2f}")
    calibration = [t.x_train[:samples] for t in tasks]
    rows = []
    for sharing in (0.5, 1.0):
        for method, refit_layers, refit_heads in VARIANTS:
            start = time.perf_counter()
            zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=sharing, method=method,
                                          refit_layers=refit_layers, refit_heads=refit_heads)
            seconds = time.perf_counter() - start
            accuracy = training.evaluate_tasks(zipped, [t.test for t in tasks])
            drop = float(np.mean([o - a for o, a in zip(originals, accuracy)]))
            row = {"sharing": sharing, "method": method, "refit_layers": refit_layers, "refit_heads": refit_heads,
                   "accuracy": [round(a, 2) for a in accuracy], "mean_drop": round(drop, 2), "zip_seconds": round(seconds, 1)}
            rows.append(row)
            log(f"| {sharing:.1f} | {method} | {'yes' if refit_layers else 'no'} | {'yes' if refit_heads else 'no'} | "
                f"{accuracy[0]:.2f} / {accuracy[1]:.2f} | {drop:.2f} | {seconds:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="lenet_300_100")
    parser.add_argument("--pair", choices=("split", "same"), default="split")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    print("| sharing | method | layer refit | head refit | accuracy A / B | mean drop | zip s |")
    print("|---|---|---|---|---|---|---|")
    rows = run(args.arch, args.pair)
    if args.json:
        from tfmot_zip.io import atomic_write_json, versions

        atomic_write_json(args.json, {"arch": args.arch, "pair": args.pair, "rows": rows, "versions": versions()})


if __name__ == "__main__":
    main()
