"""PAM benchmark: FLOPs of every task subset after structured pruning to within 1 point.

Fashion-MNIST, three tasks (classes_0_2, classes_3_5, classes_6_9), LeNet-5 (zoo, seed 0).
Methods, all pruned by the same iterative Taylor channel pruning (tfmot_zip.pam.prune_structured):
  separate  each original pruned on its own
  mtz       zip_models(m1, m2, m3, sharing=1.0) -> one shared trunk + 3 heads, fine-tuned, pruned
  pam       merge_pam_network (binned-MI grouping, block-diagonal start), fine-tuned, pruned
Pruning accepts a round only while every task's validation accuracy (first half of its test
split) stays within ``--tolerance`` points of its original model's; the reported accuracies are
on the other half.

Run:  nice -n 10 .venv/bin/python -m benchmarks.pam [--arch lenet5] [--train 0] [--out out/pam.json]  (~10 min on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tfmot_zip import pam
from tfmot_zip.core.pam_math import all_subsets
from tfmot_zip.data import make_task
from tfmot_zip.training import evaluate_tasks
from tfmot_zip.zip_api import zip_models
from tfmot_zip.zoo import train_on_task

TASKS = ("classes_0_2", "classes_3_5", "classes_6_9")


def _splits(n_train: int):
    """Train: the task's train split (or its first n_train). Validation / test: the two halves of its
    test split (the originals were trained on the whole train split, so held-out train images would
    flatter them)."""
    trains, vals, tests = [], [], []
    for name in TASKS:
        task = make_task(name)
        x, y = task.x_train, task.y_train
        end = len(y) if not n_train else min(n_train, len(y))
        trains.append((x[:end], y[:end]))
        xt, yt = task.test
        half = len(yt) // 2
        vals.append((xt[:half], yt[:half]))
        tests.append((xt[half:], yt[half:]))
    return trains, vals, tests


def _costs_row(net: pam.GroupedNetwork, names: list[str]) -> dict:
    costs = net.subset_costs()
    return {"+".join(s): costs[s] for s in all_subsets(names)}


def run(arch: str = "lenet5", n_train: int = 0, tolerance: float = 1.0, threshold: float = 0.7,
        finetune_steps: int = 300, prune_steps: int = 150, verbose: bool = True) -> dict:
    names = list(TASKS)
    models = [train_on_task(arch, n, seed=0).model for n in names]
    trains, vals, tests = _splits(n_train)
    base_val = [evaluate_tasks(m, [v])[0] for m, v in zip(models, vals)]
    base_test = [evaluate_tasks(m, [t])[0] for m, t in zip(models, tests)]
    targets = [a - tolerance for a in base_val]
    result = {"arch": arch, "originals_test": base_test, "originals_val": base_val, "targets_val": targets}
    timings = {}

    # separate pruning ----------------------------------------------------------------------
    start = time.time()
    separate = []
    for i, name in enumerate(names):
        net = pam.separate_network(models[i], name)
        separate.append(pam.prune_structured(net, [trains[i]], [vals[i]], [targets[i]],
                                             finetune_steps=prune_steps, verbose=verbose))
    timings["separate"] = time.time() - start
    sep_single = {name: net.subset_costs()[(name,)] for name, net in zip(names, separate)}
    sep_costs = {}
    for s in all_subsets(names):
        sep_costs["+".join(s)] = tuple(int(sum(sep_single[t][k] for t in s)) for k in (0, 1))
    sep_test = [pam.evaluate(net, [tests[i]])[0] for i, net in enumerate(separate)]
    unpruned = {"+".join(s): tuple(int(sum(pam.separate_network(models[names.index(t)], t).subset_costs()[(t,)][k]
                                           for t in s)) for k in (0, 1)) for s in all_subsets(names)}

    # MTZ -----------------------------------------------------------------------------------
    start = time.time()
    zipped = zip_models(*models, calibration_data=[x for x, _ in trains], sharing=1.0, task_names=names,
                        calibration_samples=2000)
    mtz = pam.shared_network_from_zip(zipped, models, names)
    check = [t[0][:256] for t in tests]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(zipped.predict(check, verbose=0), mtz.to_keras().predict(check, verbose=0)))
    mtz_zip_acc = pam.evaluate(mtz, tests)
    pam.finetune(mtz, trains, finetune_steps, learning_rate=1e-3)
    mtz_ft_acc = pam.evaluate(mtz, tests)
    mtz_pruned = pam.prune_structured(mtz, trains, vals, targets, finetune_steps=prune_steps, verbose=verbose)
    timings["mtz"] = time.time() - start

    # PAM -----------------------------------------------------------------------------------
    start = time.time()
    net = pam.merge_pam_network(models, trains, threshold=threshold, task_names=names)
    pam_groups = net.group_sizes()
    pam_merge_acc = pam.evaluate(net, tests)
    pam_merge_costs = _costs_row(net, names)
    pam.finetune(net, trains, finetune_steps, learning_rate=1e-3)
    pam_ft_acc = pam.evaluate(net, tests)
    pam_pruned = pam.prune_structured(net, trains, vals, targets, finetune_steps=prune_steps, verbose=verbose)
    timings["pam"] = time.time() - start

    result.update(
        unpruned_separate=unpruned,
        separate=sep_costs, separate_test=sep_test,
        mtz=_costs_row(mtz_pruned, names), mtz_test=pam.evaluate(mtz_pruned, tests),
        mtz_extract_max_diff=diff, mtz_zip_test=mtz_zip_acc, mtz_finetuned_test=mtz_ft_acc,
        mtz_groups=mtz_pruned.group_sizes(),
        pam=_costs_row(pam_pruned, names), pam_test=pam.evaluate(pam_pruned, tests),
        pam_groups_merged=pam_groups, pam_groups_pruned=pam_pruned.group_sizes(),
        pam_merge_test=pam_merge_acc, pam_merge_costs=pam_merge_costs, pam_finetuned_test=pam_ft_acc,
        threshold=threshold, timings=timings,
    )
    return result, pam_pruned


def print_report(r: dict) -> None:
    print(f"\n{r['arch']}: originals test acc {np.round(r['originals_test'], 2)}; val targets {np.round(r['targets_val'], 2)}")
    print(f"test acc after pruning: separate {np.round(r['separate_test'], 2)}  mtz {np.round(r['mtz_test'], 2)}  "
          f"pam {np.round(r['pam_test'], 2)}")
    print(f"{'subset':40s} {'unpruned':>10s} {'separate':>10s} {'mtz':>10s} {'pam':>10s} {'sep/pam':>8s} {'mtz/pam':>8s}")
    for s in r["separate"]:
        u, a, b, c = r["unpruned_separate"][s][0], r["separate"][s][0], r["mtz"][s][0], r["pam"][s][0]
        print(f"{s:40s} {u:10d} {a:10d} {b:10d} {c:10d} {a / c:8.2f} {b / c:8.2f}")
    print("params (all tasks): separate", r["separate"]["+".join(TASKS)][1], "mtz", r["mtz"]["+".join(TASKS)][1],
          "pam", r["pam"]["+".join(TASKS)][1])
    print("pam groups merged:", r["pam_groups_merged"])
    print("pam groups pruned:", r["pam_groups_pruned"])
    print("mtz groups pruned:", r["mtz_groups"])
    print("timings (s):", {k: round(v) for k, v in r["timings"].items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--train", type=int, default=0, help="training images per task (0: all but validation)")
    parser.add_argument("--tolerance", type=float, default=1.0)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--prune-steps", type=int, default=200)
    parser.add_argument("--finetune-steps", type=int, default=1000)
    parser.add_argument("--out", default="out/pam.json")
    parser.add_argument("--tflite", default="out/pam_subsets.tflite")
    args = parser.parse_args()
    result, net = run(args.arch, args.train, args.tolerance, args.threshold, finetune_steps=args.finetune_steps,
                      prune_steps=args.prune_steps)
    print_report(result)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1, default=float)
    keys = pam.export_subsets_tflite(net, args.tflite)
    print("tflite signatures:", sorted(keys.values()))
    print("wrote", args.out, args.tflite)


if __name__ == "__main__":
    main()
