"""Sharing given as a parameter budget: automatic allocation against the uniform fraction with the same parameters.

For every pair (cached zoo models, Fashion-MNIST, 10,000 calibration images per task), zips once
with ``sharing=Budget(fraction=...)`` (each hidden layer's drift measured by zipping it alone,
then the allocation) and once with the single fraction whose stripped parameter count is the
largest that fits the same budget, with the same options on both sides, and prints the budget,
the per-layer fractions, the parameters (``strip_zipping(zipped).count_params()``) and each task's
test accuracy right after zipping (no retraining), with the mean drop against the originals.
``--heldout N`` adds the same figures on the N training images per task that follow the calibration
images (seen by the originals' training, never by the zip): a second, larger sample on which to rank
the two sides when the test split cannot tell them apart.

``--scan LAYER=F1,F2,... --fill OTHER`` (one pair) maps the budget's landscape instead: for each
fraction of ``LAYER``, ``OTHER`` takes the least sharing (in steps of 1/100) that fits the budget,
and each such allocation is zipped with the default recipe and measured (test split, and the
held-out images when ``--heldout`` is given).

Usage:
    .venv/bin/python benchmarks/budget.py [--fraction 0.6] [--pairs lenet_300_100:split,lenet5:split,lenet_300_100:same]
        [--no-refit] [--heldout 0] [--json out/budget.json]
    .venv/bin/python benchmarks/budget.py --pairs lenet_300_100:split --scan fc1=0.81,0.82 --fill fc2 [--heldout N]
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


def run_pair(arch: str, pair: str, fraction: float, refit: bool, samples: int = 10_000, log=print,
             heldout: int = 0) -> dict:
    """Automatic allocation and uniform fraction at one budget; returns the row.

    ``heldout``: also measure on that many training images per task after the calibration images.
    """
    import tfmot_zip
    from tfmot_zip import training
    from tfmot_zip.zipping.budget import Budget, uniform_for_budget

    trained, tasks = load_pair(arch, pair)
    models = [t.model for t in trained]
    originals = [t.test_accuracy for t in trained]
    calibration = [t.x_train[:samples] for t in tasks]
    options = {"method": "mtz", "refit_layers": refit, "refit_heads": refit}
    budget = Budget(fraction=fraction)
    held, held_originals = _held_out(tasks, models, samples, heldout)

    def measure(sharing) -> tuple[dict, float]:
        start = time.perf_counter()
        zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=sharing, **options)
        seconds = time.perf_counter() - start
        result = {
            "params": int(tfmot_zip.strip_zipping(zipped).count_params()),
            **_drops(originals, training.evaluate_tasks(zipped, [t.test for t in tasks])),
            "zip_seconds": round(seconds, 1),
            "report": tfmot_zip.zip_summary(zipped).budget,
        }
        if heldout:
            result["heldout"] = _drops(held_originals, training.evaluate_tasks(zipped, held))
        return result, seconds

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
    if heldout:
        row["heldout"] = {"images_per_task": heldout, "originals": [round(o, 2) for o in held_originals]}
    shares = ", ".join(f"{k} {v:.2f}" for k, v in row["auto"]["fractions"].items())
    log(f"| {arch} {pair} | {row['budget']:,} ({fraction:.0%} of {row['params_original']:,}) | {shares} "
        f"({allocation['chosen']}) | "
        f"{auto['params']:,} | {auto['mean_drop']:.2f} | {uniform_fraction:.3f} | {uniform['params']:,} | "
        f"{uniform['mean_drop']:.2f} | {auto['zip_seconds']:.0f} / {uniform['zip_seconds']:.0f} |")
    if heldout:
        log(f"|   held out ({heldout:,} training images per task after the calibration images) | | | | "
            f"{auto['heldout']['mean_drop']:.2f} | | | {uniform['heldout']['mean_drop']:.2f} | |")
    return row


def _drops(reference, accuracy, digits: int = 2) -> dict:
    """Accuracies and their mean drop against ``reference`` (points)."""
    import numpy as np

    return {"accuracy": [round(a, 2) for a in accuracy],
            "mean_drop": round(float(np.mean([o - a for o, a in zip(reference, accuracy)])), digits)}


def _held_out(tasks, models, samples: int, heldout: int):
    """The ``heldout`` training images per task after the first ``samples``, and the originals' accuracy on them."""
    from tfmot_zip import training

    held = [(t.x_train[samples:samples + heldout], t.y_train[samples:samples + heldout]) for t in tasks]
    if heldout and min(len(x) for x, _ in held) < heldout:
        raise ValueError(f"--heldout {heldout} asks for more training images than follow the {samples:,} calibration "
                         f"images ({min(len(x) for x, _ in held):,}); pass at most that")
    return held, ([training.accuracy(m.predict(x, batch_size=1000, verbose=0), y)
                   for m, (x, y) in zip(models, held)] if heldout else [])


def scan(arch: str, pair: str, fraction: float, layer: str, values, fill: str, samples: int = 10_000,
         heldout: int = 0, log=print) -> list[dict]:
    """For each fraction of ``layer``, the least sharing of ``fill`` that fits the budget, zipped and measured."""
    import tfmot_zip
    from tfmot_zip import training
    from tfmot_zip.zipping.budget import Budget

    trained, tasks = load_pair(arch, pair)
    models = [t.model for t in trained]
    originals = [t.test_accuracy for t in trained]
    calibration = [t.x_train[:samples] for t in tasks]
    held, held_originals = _held_out(tasks, models, samples, heldout)
    budget = Budget(fraction=fraction).target(sum(m.count_params() for m in models))

    def stripped_params(sharing) -> int:  # pairs only: no Hessians, no refits
        zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=sharing, method="random",
                                      refit_layers=False, refit_heads=False, recalibrate_batchnorm=False, progress=False)
        return int(tfmot_zip.strip_zipping(zipped).count_params())

    rows = []
    log(f"| {layer} | {fill} | params (budget {budget:,}) | mean drop, test | mean drop, held out |")
    log("|---|---|---|---|---|")
    for value in values:
        low, high = 0, 100  # the least sharing of ``fill`` (in hundredths) that fits
        if stripped_params({layer: value, fill: 1.0}) > budget:
            log(f"| {value:.2f} | - | does not fit even with {fill} fully shared | | |")
            continue
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if stripped_params({layer: value, fill: middle / 100}) <= budget else (middle + 1, high)
        sharing = {layer: value, fill: low / 100}
        zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=sharing, progress=False)
        test = _drops(originals, training.evaluate_tasks(zipped, [t.test for t in tasks]), digits=3)
        row = {"sharing": sharing, "params": int(tfmot_zip.strip_zipping(zipped).count_params()),
               "mean_drop": test["mean_drop"]}
        if heldout:
            row["heldout_mean_drop"] = _drops(held_originals, training.evaluate_tasks(zipped, held), digits=3)["mean_drop"]
        rows.append(row)
        log(f"| {value:.2f} | {low / 100:.2f} | {row['params']:,} | {row['mean_drop']:.2f} | "
            f"{row.get('heldout_mean_drop', float('nan')):.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.6, help="budget as a fraction of the two originals' parameters")
    parser.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma-separated arch:split|same")
    parser.add_argument("--no-refit", action="store_true", help="plain MTZ on both sides (default: layer and head refits)")
    parser.add_argument("--heldout", type=int, default=0,
                        help="also measure on this many training images per task after the calibration images")
    parser.add_argument("--scan", default=None, metavar="LAYER=F1,F2,...",
                        help="map the budget's landscape over this layer's fractions (one pair; needs --fill)")
    parser.add_argument("--fill", default=None, metavar="OTHER",
                        help="with --scan: the layer whose sharing is set to the least that fits the budget")
    parser.add_argument("--json", default="out/budget.json", help="where to write the rows")
    args = parser.parse_args()
    refit = not args.no_refit
    if args.scan is not None:
        layer, _, values = args.scan.partition("=")
        try:
            fractions = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            fractions = []
        if not layer or not fractions or any(not 0.0 <= f <= 1.0 for f in fractions) or not args.fill or "," in args.pairs:
            parser.error("--scan takes LAYER=F1,F2,... (fractions in [0, 1]) with --fill OTHER and one pair in --pairs; "
                         f"received --scan {args.scan!r} --fill {args.fill!r} --pairs {args.pairs!r}")
        rows = scan(*args.pairs.split(":"), fraction=args.fraction, layer=layer, values=fractions, fill=args.fill,
                    heldout=args.heldout)
        from tfmot_zip.io import atomic_write_json, versions

        atomic_write_json(args.json, {"fraction": args.fraction, "heldout": args.heldout, "scan": rows, "versions": versions()})
        print(f"wrote {args.json}")
        return
    print(f"options on both sides: method=mtz, refit_layers={refit}, refit_heads={refit}")
    print("| pair | budget | automatic allocation | params | mean drop | uniform fraction | params | mean drop | zip s auto / uniform |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [run_pair(*p.split(":"), fraction=args.fraction, refit=refit, heldout=args.heldout)
            for p in args.pairs.split(",")]
    from tfmot_zip.io import atomic_write_json, versions

    atomic_write_json(args.json, {"fraction": args.fraction, "refit": refit, "heldout": args.heldout, "rows": rows, "versions": versions()})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
