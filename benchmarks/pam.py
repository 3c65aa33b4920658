"""PAM benchmark: FLOPs of every task subset after structured pruning to within 1 point.

Fashion-MNIST, three tasks (classes_0_2, classes_3_5, classes_6_9), LeNet-5 or the small VGG (zoo,
seed 0; the VGG's BatchNormalization is folded into its convolutions first, an exact rewrite).
Methods, all pruned by the same iterative Taylor channel pruning (tfmot_zip.pam.prune_structured):
  separate  each original pruned on its own
  separate_equal  the pruned separate networks given PAM's budget: the same fine-tuning steps (each
            network on its own task) and the same second pruning pass; the ratios are against this
  mtz       zip_models(m1, m2, m3, sharing=1.0) -> one shared trunk + 3 heads, fine-tuned, pruned
  pam       tfmot_zip.pam.merge_and_prune: the separately pruned networks' units (relevance) merged
            across tasks into subset groups by Hessian pairing (most aggressive threshold that keeps
            every task on target after fine-tuning), then pruned again
  pam_mi    (--with-mi) the PAM authors' grouping: binned mutual information with each task's labels,
            block-diagonal start, fine-tuned, pruned
Pruning accepts a round only while every task's validation accuracy (first half of its test
split) stays within ``--tolerance`` points of its original model's; the reported accuracies are
on the other half.

Run:  nice -n 10 .venv/bin/python -m benchmarks.pam [--arch lenet5|small_vgg] [--with-mi] [--out out/pam_lenet5.json]
(LeNet-5 about 10 min on 2 cores, the small VGG about 40 min)
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import pickle
import time

import numpy as np

from tfmot_zip import pam
from tfmot_zip.compat import keras
from tfmot_zip.model.fold import fold_batchnorm
from tfmot_zip.core.pam_math import all_subsets
from tfmot_zip.data.tasks import make_task
from tfmot_zip.training import evaluate_tasks
from tfmot_zip.zipping.api import zip_models
from tfmot_zip.apps.zoo import train_on_task

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


def _load(arch: str, names: list):
    models = [train_on_task(arch, n, seed=0).model for n in names]
    if any(isinstance(l, keras.layers.BatchNormalization) for l in models[0].layers):
        models = [fold_batchnorm(m) for m in models]
    return models


def code_version() -> str:
    """A hash of every source file a cached stage depends on (the package and this benchmark)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for folder in ("tfmot_zip", "benchmarks"):
        for path in sorted(glob.glob(os.path.join(root, folder, "**", "*.py"), recursive=True)):
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()[:12]


def _cached(reuse: bool, name: str, compute):
    """A baseline stage's result, pickled under out/pam_cache so that a later stage's failure or a
    rerun with --reuse-baselines does not recompute it (same arch, data, budgets and code: the key
    holds :func:`code_version`, so any change to the package or the benchmark recomputes)."""
    path = os.path.join("out", "pam_cache", f"{name}_{code_version()}.pkl")
    if reuse and os.path.exists(path):
        with open(path, "rb") as handle:
            return pickle.load(handle)
    value = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as handle:
        pickle.dump(value, handle)
    os.replace(path + ".tmp", path)
    return value


def run(arch: str = "lenet5", n_train: int = 0, tolerance: float = 1.0, threshold: float = 0.7,
        finetune_steps: int = 1000, prune_steps: int = 200, with_mi: bool = False, verbose: bool = True,
        reuse: bool = False) -> tuple:
    names = list(TASKS)
    models = _load(arch, names)
    trains, vals, tests = _splits(n_train)
    base_val = [evaluate_tasks(m, [v])[0] for m, v in zip(models, vals)]
    base_test = [evaluate_tasks(m, [t])[0] for m, t in zip(models, tests)]
    targets = [a - tolerance for a in base_val]
    result = {"arch": arch, "originals_test": base_test, "originals_val": base_val, "targets_val": targets,
              "finetune_steps": finetune_steps, "prune_steps": prune_steps}
    timings = {}

    # separate pruning (also PAM's relevance step) ------------------------------------------
    key = f"{arch}_n{n_train}_tol{tolerance}_p{prune_steps}_f{finetune_steps}"
    start = time.time()
    separate = _cached(reuse, f"{key}_separate", lambda: [
        pam.prune_structured(pam.separate_network(models[i], name), [trains[i]], [vals[i]], [targets[i]],
                             finetune_steps=prune_steps, verbose=verbose)
        for i, name in enumerate(names)])
    timings["separate"] = time.time() - start
    sep_single = {name: net.subset_costs()[(name,)] for name, net in zip(names, separate)}
    sep_costs = {}
    for s in all_subsets(names):
        sep_costs["+".join(s)] = tuple(int(sum(sep_single[t][k] for t in s)) for k in (0, 1))
    sep_test = [pam.evaluate(net, [tests[i]])[0] for i, net in enumerate(separate)]
    unpruned = {"+".join(s): tuple(int(sum(pam.separate_network(models[names.index(t)], t).subset_costs()[(t,)][k]
                                           for t in s)) for k in (0, 1)) for s in all_subsets(names)}
    result.update(unpruned_separate=unpruned, separate=sep_costs, separate_test=sep_test,
                  separate_groups=[net.group_sizes() for net in separate])

    # separate at PAM's budget: the same fine-tuning steps and the same second pruning pass ----
    start = time.time()

    def equal_stage():
        nets = [pickle.loads(pickle.dumps(net)) for net in separate]  # PAM starts from the originals
        for i, net in enumerate(nets):
            pam.finetune(net, [trains[i]], finetune_steps, learning_rate=1e-3)
            nets[i] = pam.prune_structured(net, [trains[i]], [vals[i]], [targets[i]], finetune_steps=prune_steps,
                                           verbose=verbose)
        return nets

    equal = _cached(reuse, f"{key}_separate_equal", equal_stage)
    timings["separate_equal"] = time.time() - start
    eq_single = {name: net.subset_costs()[(name,)] for name, net in zip(names, equal)}
    result.update(
        separate_equal={"+".join(s): tuple(int(sum(eq_single[t][k] for t in s)) for k in (0, 1)) for s in all_subsets(names)},
        separate_equal_test=[pam.evaluate(net, [tests[i]])[0] for i, net in enumerate(equal)],
        separate_equal_groups=[net.group_sizes() for net in equal],
    )

    # MTZ -----------------------------------------------------------------------------------
    start = time.time()
    zipped = zip_models(*models, calibration_data=[x for x, _ in trains], sharing=1.0, task_names=names,
                        calibration_samples=2000)
    mtz = pam.shared_network_from_zip(zipped, models, names)
    check = [t[0][:256] for t in tests]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(zipped.predict(check, verbose=0), mtz.to_keras().predict(check, verbose=0)))
    mtz_zip_acc = pam.evaluate(mtz, tests)

    def mtz_stage():
        pam.finetune(mtz, trains, finetune_steps, learning_rate=1e-3)
        accuracy = pam.evaluate(mtz, tests)
        return accuracy, pam.prune_structured(mtz, trains, vals, targets, finetune_steps=prune_steps, verbose=verbose)

    mtz_ft_acc, mtz_pruned = _cached(reuse, f"{key}_mtz", mtz_stage)
    timings["mtz"] = time.time() - start
    result.update(mtz=_costs_row(mtz_pruned, names), mtz_test=pam.evaluate(mtz_pruned, tests),
                  mtz_extract_max_diff=diff, mtz_zip_test=mtz_zip_acc, mtz_finetuned_test=mtz_ft_acc,
                  mtz_groups=mtz_pruned.group_sizes())

    # PAM (prune, Hessian merge into subset groups, prune) -----------------------------------
    start = time.time()
    pam_result = pam.merge_and_prune(models, trains, vals, targets, task_names=names, finetune_steps=finetune_steps,
                                     prune_steps=prune_steps, separate=separate, verbose=verbose)
    timings["pam"] = time.time() - start
    net = pam_result.net
    result.update(
        pam=_costs_row(net, names), pam_test=pam.evaluate(net, tests), pam_threshold=pam_result.threshold,
        pam_tried=pam_result.tried, pam_groups_merged=pam_result.merged.group_sizes(),
        pam_merged_costs=_costs_row(pam_result.merged, names), pam_merged_test=pam.evaluate(pam_result.merged, tests),
        pam_groups_pruned=net.group_sizes(),
    )

    # PAM with the authors' mutual-information grouping ---------------------------------------
    if with_mi:
        start = time.time()
        mi = pam.merge_pam_network(models, trains, threshold=threshold, task_names=names)
        mi_groups = mi.group_sizes()
        pam.finetune(mi, trains, finetune_steps, learning_rate=1e-3)
        mi_pruned = pam.prune_structured(mi, trains, vals, targets, finetune_steps=prune_steps, verbose=verbose)
        timings["pam_mi"] = time.time() - start
        result.update(pam_mi=_costs_row(mi_pruned, names), pam_mi_test=pam.evaluate(mi_pruned, tests),
                      pam_mi_groups_merged=mi_groups, pam_mi_groups_pruned=mi_pruned.group_sizes(), mi_threshold=threshold)
    result["timings"] = timings
    return result, net


def _gzipped(path: str) -> int:
    with open(path, "rb") as handle:
        return len(gzip.compress(handle.read(), 9))


def size_route(net: pam.GroupedNetwork, r: dict, path: str, sparsity: float) -> dict:
    """The unstructured TFMOT route for size: magnitude-prune the PAM network, export both TFLite files."""
    trains, _, tests = _splits(0)
    sparse = pam.prune_unstructured(net, trains, sparsity=sparsity, steps=300)
    sparse_path = path.replace(".tflite", f"_sparse{int(sparsity * 100)}.tflite")
    pam.export_subsets_tflite(net, path)
    pam.export_subsets_tflite(sparse, sparse_path)
    return {"sparsity": sparsity, "sparse_test": pam.evaluate(sparse, tests), "tflite_bytes": os.path.getsize(path),
            "tflite_gzip": _gzipped(path), "sparse_tflite_bytes": os.path.getsize(sparse_path),
            "sparse_tflite_gzip": _gzipped(sparse_path), "sparse_path": sparse_path}


def verdict(r: dict) -> dict:
    """The issue's targets at equal budgets: PAM >= 1.5x fewer all-tasks FLOPs than the separate networks given
    the same fine-tuning and second pruning pass, and never worse than any baseline on any subset."""
    every = "+".join(TASKS)
    baselines = ("separate_equal", "separate", "mtz")
    worse = [s for s in r["separate"] if r["pam"][s][0] > min(r[b][s][0] for b in baselines)]
    ratio = r["separate_equal"][every][0] / r["pam"][every][0]
    return {"all_tasks_ratio_vs_separate_equal_budget": ratio,
            "all_tasks_ratio_vs_separate_pruned_once": r["separate"][every][0] / r["pam"][every][0],
            "all_tasks_ratio_vs_mtz": r["mtz"][every][0] / r["pam"][every][0],
            "subsets_worse_than_a_baseline": worse, "met": ratio >= 1.5 and not worse}


def print_report(r: dict) -> None:
    mi = "pam_mi" in r
    print(f"\n{r['arch']}: originals test acc {np.round(r['originals_test'], 2)}; val targets {np.round(r['targets_val'], 2)}")
    print(f"test acc after pruning: separate {np.round(r['separate_test'], 2)}  "
          f"separate (equal budget) {np.round(r['separate_equal_test'], 2)}  mtz {np.round(r['mtz_test'], 2)}  "
          f"pam {np.round(r['pam_test'], 2)}" + (f"  pam_mi {np.round(r['pam_mi_test'], 2)}" if mi else ""))
    print(f"{'subset':40s} {'unpruned':>10s} {'separate':>10s} {'sep_equal':>10s} {'mtz':>10s} {'pam':>10s} "
          f"{'eq/pam':>8s} {'mtz/pam':>8s}" + (f" {'pam_mi':>10s}" if mi else ""))
    for s in r["separate"]:
        u, a, e, b, c = (r[k][s][0] for k in ("unpruned_separate", "separate", "separate_equal", "mtz", "pam"))
        print(f"{s:40s} {u:10d} {a:10d} {e:10d} {b:10d} {c:10d} {e / c:8.2f} {b / c:8.2f}"
              + (f" {r['pam_mi'][s][0]:10d}" if mi else ""))
    every = "+".join(TASKS)
    print("params (all tasks): separate", r["separate"][every][1], "mtz", r["mtz"][every][1], "pam", r["pam"][every][1])
    print("pam merge thresholds tried:", [(t["threshold"], t.get("kept_separate", []), np.round(t["accuracy"], 2).tolist(),
                                           t["flops"], t["accepted"]) for t in r["pam_tried"]])
    print("pam groups merged:", r["pam_groups_merged"])
    print("pam groups pruned:", r["pam_groups_pruned"])
    print("mtz groups pruned:", r["mtz_groups"])
    print("separate groups pruned:", r["separate_groups"])
    print("verdict:", verdict(r))
    print("timings (s):", {k: round(v) for k, v in r["timings"].items()})


def render_markdown(r: dict) -> str:
    """The result as the markdown tables of docs/PAM.md."""
    short = {t: t.replace("classes_", "").replace("_", "-") for t in TASKS}
    every = "+".join(TASKS)
    mi = "pam_mi" in r
    acc = lambda v: " / ".join(f"{a:.2f}" for a in v)
    lines = [
        f"Originals (test half) {acc(r['originals_test'])}; validation targets {acc(r['targets_val'])}.",
        f"Test accuracy after pruning: separate {acc(r['separate_test'])}, separate at equal budget "
        f"{acc(r['separate_equal_test'])}, MTZ {acc(r['mtz_test'])}, "
        f"PAM {acc(r['pam_test'])}" + (f", PAM (MI grouping) {acc(r['pam_mi_test'])}" if mi else "") + ".",
        "",
        "| task subset | unpruned separate | separate pruned once | separate, equal budget | MTZ then prune | PAM "
        "| equal-budget separate / PAM | MTZ / PAM |" + (" PAM (MI grouping) |" if mi else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if mi else ""),
    ]
    for s in r["separate"]:
        u, a, e, m, p = (r[k][s][0] for k in ("unpruned_separate", "separate", "separate_equal", "mtz", "pam"))
        name = "{" + ", ".join(short[t] for t in s.split("+")) + "}"
        lines.append(f"| {name} | {u:,} | {a:,} | {e:,} | {m:,} | **{p:,}** | {e / p:.2f}x | {m / p:.2f}x |"
                     + (f" {r['pam_mi'][s][0]:,} |" if mi else ""))
    v = verdict(r)
    lines += [
        "",
        f"Parameters, all tasks: separate {r['separate'][every][1]:,}, separate at equal budget "
        f"{r['separate_equal'][every][1]:,}, MTZ {r['mtz'][every][1]:,}, PAM {r['pam'][every][1]:,}"
        + (f", PAM (MI grouping) {r['pam_mi'][every][1]:,}" if mi else "") + ".",
        f"Target (>= 1.5x fewer all-tasks FLOPs than separate at equal budget, never worse than any baseline): "
        f"{v['all_tasks_ratio_vs_separate_equal_budget']:.2f}x vs separate at equal budget "
        f"({v['all_tasks_ratio_vs_separate_pruned_once']:.2f}x vs separate pruned once), "
        f"{v['all_tasks_ratio_vs_mtz']:.2f}x vs MTZ, subsets worse "
        f"than a baseline: {v['subsets_worse_than_a_baseline'] or 'none'} -> **{'met' if v['met'] else 'not met'}**.",
        "",
        "Merge thresholds tried (validation accuracy after fine-tuning, all-tasks FLOPs before the final pruning): "
        + "; ".join(f"{t['threshold']}{_kept_text(t)}: {acc(t['accuracy'])}, {t['flops']:,} "
                    f"{'accepted' if t['accepted'] else 'too lossy'}" for t in r["pam_tried"]) + ".",
        f"Groups after merging: {_groups_text(r['pam_groups_merged'])}.",
        f"Groups after pruning: {_groups_text(r['pam_groups_pruned'])}.",
        f"MTZ after pruning: {_groups_text(r['mtz_groups'])}. Separate after pruning: "
        + "; ".join(_groups_text(g) for g in r["separate_groups"]) + ".",
    ]
    if "size_route" in r:
        z = r["size_route"]
        lines.append(
            f"Size route: PAM TFLite (7 signatures) {z['tflite_bytes']:,} bytes, {z['tflite_gzip']:,} gzipped; after "
            f"{z['sparsity']:.0%} magnitude pruning {z['sparse_tflite_gzip']:,} gzipped (test accuracy {acc(z['sparse_test'])})."
        )
    lines.append(f"Wall times (s, 2 shared cores): {', '.join(f'{k} {v:.0f}' for k, v in r['timings'].items())}.")
    return "\n".join(lines)


def _kept_text(tried: dict) -> str:
    kept = tried.get("kept_separate") or []
    return f" keeping {', '.join(k.replace('classes_', '') for k in kept)} separate" if kept else ""


def _groups_text(groups: list) -> str:
    return ", ".join(g["name"] + " " + "/".join(f"{k.replace('classes_', '')}:{n}" for k, n in g.items() if k != "name")
                     for g in groups)


def _write_json(result: dict, path: str) -> None:
    from tfmot_zip.io import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=1, default=float))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--train", type=int, default=0, help="training images per task (0: all but validation)")
    parser.add_argument("--tolerance", type=float, default=1.0)
    parser.add_argument("--threshold", type=float, default=0.7, help="MI relevance threshold of --with-mi")
    parser.add_argument("--prune-steps", type=int, default=200)
    parser.add_argument("--finetune-steps", type=int, default=3000, help="joint steps after merging (MTZ and PAM)")
    parser.add_argument("--sparsity", type=float, default=0.8, help="unstructured (size) route sparsity")
    parser.add_argument("--reuse-baselines", action="store_true",
                        help="load the separate and MTZ results of an earlier run from out/pam_cache")
    parser.add_argument("--with-mi", action="store_true", help="also run PAM with the authors' MI grouping")
    parser.add_argument("--out", default=None, help="default out/pam_<arch>.json")
    parser.add_argument("--tflite", default=None, help="default out/pam_<arch>.tflite")
    args = parser.parse_args()
    args.out = args.out or f"out/pam_{args.arch}.json"
    args.tflite = args.tflite or f"out/pam_{args.arch}.tflite"
    result, net = run(args.arch, args.train, args.tolerance, args.threshold, finetune_steps=args.finetune_steps,
                      prune_steps=args.prune_steps, with_mi=args.with_mi, reuse=args.reuse_baselines)
    result["verdict"] = verdict(result)
    print_report(result)
    _write_json(result, args.out)  # before the size route: the FLOPs figures survive a failure there
    result["size_route"] = size_route(net, result, args.tflite, args.sparsity)
    _write_json(result, args.out)
    size = result["size_route"]
    print(f"size route: TFLite {size['tflite_bytes']} bytes ({size['tflite_gzip']} gzipped); "
          f"{size['sparsity']:.0%} magnitude-pruned {size['sparse_tflite_bytes']} ({size['sparse_tflite_gzip']} gzipped), "
          f"test acc {np.round(size['sparse_test'], 2)}")
    print("wrote", args.out, args.tflite)
    print("\n" + render_markdown(result))


if __name__ == "__main__":
    main()
