"""Data-driven refits and statistics repair after a one-shot zip, side by side with the paper's MTZ.

Zips two cached zoo models (Fashion-MNIST, 10,000 calibration images per task) at sharing 0.5 and
1.0 with ``method`` x {no refit, head refit, layer refit, both} x {no repair, repair} and prints
each task's test accuracy right after zipping (no retraining), the mean drop against the originals
and the zip time (measured in the same run, so the ratios are comparable).

Usage:
    .venv/bin/python benchmarks/refit.py [--arch lenet_300_100|lenet5] [--pair split|same]
        [--sharing 0.5 1.0] [--methods mtz euclidean] [--refits none heads layers both] [--repair no yes]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (method, refit_layers, refit_heads, repair)
VARIANTS = tuple(
    (method, layers, heads, repair)
    for method in ("mtz", "euclidean")
    for layers, heads in ((False, False), (False, True), (True, False), (True, True))
    for repair in (False, True)
    if method == "mtz" or layers == heads
)


REFITS = {"none": (False, False), "heads": (False, True), "layers": (True, False), "both": (True, True)}


def load_pair(arch: str, pair: str) -> tuple[list, list]:
    """``(tasks, trained zoo models)`` of a pair: "split" (classes 0-4 / 5-9, seed 0 both) or "same"
    (all ten classes, seeds 0 and 1); the models come from the zoo cache when trained before."""
    from tfmot_zip import data
    from tfmot_zip.apps import zoo

    if pair == "split":
        tasks, seeds = [data.make_task("classes_0_4"), data.make_task("classes_5_9")], (0, 0)
    else:
        tasks, seeds = [data.make_task("all", seed=0), data.make_task("all", seed=1)], (0, 1)
    return tasks, [zoo.train_on_task(arch, t, seed=s) for t, s in zip(tasks, seeds)]


def run(arch: str, pair: str, samples: int = 10_000, log=print, sharings=(0.5, 1.0), methods=("mtz", "euclidean"),
        refits=tuple(REFITS), repairs=(False, True)) -> list[dict]:
    """Every variant of ``methods`` and ``refits`` at each sharing of ``sharings``; returns one dict per row."""
    import numpy as np

    import tfmot_zip
    from tfmot_zip import training

    tasks, trained = load_pair(arch, pair)
    models = [t.model for t in trained]
    originals = [round(t.test_accuracy, 2) for t in trained]
    log(f"{arch} {pair}: originals {originals[0]:.2f} / {originals[1]:.2f}")
    calibration = [t.x_train[:samples] for t in tasks]
    rows = []
    for sharing in sharings:
        for method, refit_layers, refit_heads, repair in VARIANTS:
            if method not in methods or (refit_layers, refit_heads) not in {REFITS[r] for r in refits} or repair not in repairs:
                continue
            start = time.perf_counter()
            zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=sharing, method=method,
                                          refit_layers=refit_layers, refit_heads=refit_heads, repair=repair)
            seconds = time.perf_counter() - start
            accuracy = training.evaluate_tasks(zipped, [t.test for t in tasks])
            drop = float(np.mean([o - a for o, a in zip(originals, accuracy)]))
            row = {"sharing": sharing, "method": method, "refit_layers": refit_layers, "refit_heads": refit_heads,
                   "repair": repair, "accuracy": [round(a, 2) for a in accuracy], "mean_drop": round(drop, 2), "zip_seconds": round(seconds, 1)}
            rows.append(row)
            flags = " | ".join("yes" if flag else "no" for flag in (refit_layers, refit_heads, repair))
            log(f"| {sharing:.1f} | {method} | {flags} | "
                f"{accuracy[0]:.2f} / {accuracy[1]:.2f} | {drop:.2f} | {seconds:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="lenet_300_100")
    parser.add_argument("--pair", choices=("split", "same"), default="split")
    parser.add_argument("--sharing", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--methods", nargs="+", default=["mtz", "euclidean"])
    parser.add_argument("--refits", nargs="+", choices=tuple(REFITS), default=list(REFITS))
    parser.add_argument("--repair", nargs="+", choices=("no", "yes"), default=["no", "yes"])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    print("| sharing | method | layer refit | head refit | repair | accuracy A / B | mean drop | zip s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = run(args.arch, args.pair, sharings=tuple(args.sharing), methods=tuple(args.methods), refits=tuple(args.refits),
               repairs=tuple(r == "yes" for r in args.repair))
    if args.json:
        from tfmot_zip.io import atomic_write_json, versions

        atomic_write_json(args.json, {"arch": args.arch, "pair": args.pair, "rows": rows, "versions": versions()})


if __name__ == "__main__":
    main()
