"""Convolutional and residual networks, three models, exact vs block conv Hessians.

Measures on Fashion-MNIST (one run, side by side):

* LeNet-5 pair and ResNet-20 pair (classes 0-4 vs 5-9): accuracy right after zipping and after
  light joint retraining, sharing 0.5 and 1.0, MTZ beside the Euclidean baseline; parameters.
* Zipping time (Hessians + costs + selection + updates, no retraining) of both pairs.
* Three LeNet-5 (classes 0-2, 3-5, 6-9) merged into one: per-task accuracy and storage, for
  both ways of weighing the already-merged side (``merged_hessian``).
* Exact against per-kernel-position block conv Hessians on LeNet-5 (both fit).

Usage:
    python benchmarks/conv_residual.py [--quick] [--out out/conv_residual]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pair_figures(arch, task_names, sharings, methods, calibration, retrain_steps, lr, log, conv_hessians=("auto",)):
    import tfmot_zip
    from tfmot_zip import data, training
    from tfmot_zip.apps import zoo

    tasks = [data.make_task(n) for n in task_names]
    trained = [zoo.train_on_task(arch, t, seed=0) for t in tasks]
    models = [t.model for t in trained]
    originals = [round(t.test_accuracy, 2) for t in trained]
    one_network = models[0].count_params()
    out = {"arch": arch, "tasks": task_names, "originals": originals, "one_network_params": one_network,
           "separate_params": sum(m.count_params() for m in models), "calibration_samples": calibration, "rows": []}
    log(f"{arch} {task_names}: originals {originals}")
    cal = [t.x_train[:calibration] for t in tasks]
    tests = [t.test for t in tasks]
    for conv_hessian in conv_hessians:
        for fraction in sharings:
            for method in methods:
                start = time.perf_counter()
                z = tfmot_zip.zip_models(*models, calibration_data=cal, sharing=fraction, method=method, conv_hessian=conv_hessian)
                seconds = time.perf_counter() - start
                acc = [round(a, 2) for a in training.evaluate_tasks(z, tests)]
                summary = tfmot_zip.zip_summary(z)
                row = {"sharing": fraction, "method": method, "conv_hessian": conv_hessian, "zip_seconds": round(seconds, 2),
                       "accuracy": acc, "params": summary.params_zipped,
                       "shared_params_over_one_network": round(summary.shared_params / one_network, 4)}
                if retrain_steps and method == "mtz":
                    training.compile_multitask(z, lr)
                    hist = training.retrain(z, [t.train for t in tasks], retrain_steps, lr, eval_every=retrain_steps, tests=tests)
                    row["retrained"] = [round(a, 2) for a in hist[-1][1]]
                    row["retrain_steps"] = retrain_steps
                out["rows"].append(row)
                log(f"  f={fraction:.2f} {method:<9} {conv_hessian:<5} zip {seconds:5.1f}s  acc {acc}  "
                    f"retrained {row.get('retrained')}  params {summary.params_zipped:,}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/conv_residual")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--only-resnet", action="store_true", help="only the ResNet-20 pair")
    args = parser.parse_args()

    from tfmot_zip.io import versions
    from tfmot_zip.io import atomic_write_json, check_writable_dir

    out_dir = check_writable_dir(args.out)
    steps = 100 if args.quick else 300
    results = {"versions": versions(), "lr": 5e-4}
    pair = ("classes_0_4", "classes_5_9")
    if args.only_resnet:
        results["resnet20_pair"] = pair_figures("resnet20", pair, (0.5, 1.0), ("mtz", "euclidean"), 1_000, steps // 2, 5e-4, print)
        atomic_write_json(out_dir / "conv_residual_resnet.json", results)
        return
    results["lenet5_pair"] = pair_figures("lenet5", pair, (0.5, 1.0), ("mtz", "euclidean"), 10_000, steps, 5e-4, print)
    atomic_write_json(out_dir / "conv_residual.json", results)
    results["lenet5_hessian"] = pair_figures("lenet5", pair, (1.0,), ("mtz",), 10_000, 0, 5e-4, print, ("exact", "block"))
    atomic_write_json(out_dir / "conv_residual.json", results)
    results["lenet5_three"] = {
        mode: pair_figures_three(mode, print) for mode in ("sum_of_inverses", "exact")
    }
    atomic_write_json(out_dir / "conv_residual.json", results)
    if not args.skip_resnet:
        results["resnet20_pair"] = pair_figures("resnet20", pair, (0.5, 1.0), ("mtz", "euclidean"), 1_000, steps // 2, 5e-4, print)
        atomic_write_json(out_dir / "conv_residual.json", results)
    print(f"wrote {out_dir / 'conv_residual.json'}")


def pair_figures_three(mode, log):
    import tfmot_zip
    from tfmot_zip import data, training
    from tfmot_zip.apps import zoo

    names = ("classes_0_2", "classes_3_5", "classes_6_9")
    tasks = [data.make_task(n) for n in names]
    trained = [zoo.train_on_task("lenet5", t, seed=0) for t in tasks]
    models = [t.model for t in trained]
    originals = [round(t.test_accuracy, 2) for t in trained]
    out = {"tasks": names, "originals": originals, "separate_params": sum(m.count_params() for m in models), "rows": []}
    for fraction in (0.5, 1.0):
        start = time.perf_counter()
        z = tfmot_zip.zip_models(*models, calibration_data=[t.x_train[:10_000] for t in tasks], sharing=fraction, merged_hessian=mode)
        seconds = time.perf_counter() - start
        acc = [round(a, 2) for a in training.evaluate_tasks(z, [t.test for t in tasks])]
        summary = tfmot_zip.zip_summary(z)
        training.compile_multitask(z, 5e-4)
        hist = training.retrain(z, [t.train for t in tasks], 300, 5e-4, eval_every=300, tests=[t.test for t in tasks])
        row = {"sharing": fraction, "accuracy": acc, "retrained_300": [round(a, 2) for a in hist[-1][1]],
               "params": summary.params_zipped, "zip_seconds": round(seconds, 2)}
        out["rows"].append(row)
        log(f"  three LeNet-5 ({mode}) f={fraction}: originals {originals} zipped {acc} retrained {row['retrained_300']} "
            f"params {summary.params_zipped:,} of {out['separate_params']:,} ({seconds:.1f}s)")
    return out


if __name__ == "__main__":
    main()
