"""Why MTZ loses to Euclidean averaging on the same-task pair: a small diagnostic (seconds).

Usage:
    .venv/bin/python benchmarks/diagnose.py [--out out/bench/diagnose.json]

For the two LeNet-300-100 pairs of the benchmark (same cached models, same 10,000 calibration
images), it measures, without any retraining:

1. accuracy when only ``fc1`` is zipped (fully) and when ``fc1`` and ``fc2`` are, for
   MTZ-hungarian and the Euclidean baseline: where does each lose its accuracy;
2. how different the two tasks' ``fc1`` input statistics are: the relative difference
   ``||H_A - H_B||_F / ||H_A||_F`` of their layer Hessians (the augmented second moments of the
   pixels). When it is 0 the MTZ update reduces to plain averaging of the paired weights
   (``w* = a + H^-1 (2 H^-1)^-1 (b - a) = (a + b) / 2``), so MTZ and Euclidean differ only in
   which pairs they choose;
3. how much of the ``fc1`` Hessian's trace lies in its top eigenvector (the mean image), i.e.
   how much the MTZ pair cost ``1/4 ||a - b||_H^2`` is about the response to the average input
   rather than to the variations that tell classes apart; and, for the same-task pair, MTZ
   zipping of ``fc1`` from mean-centred calibration images, which (H_A == H_B: the update is
   averaging anyway) changes only the pairing cost, dropping the mean-response term.

Results are printed and written as JSON (versions included). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAIRS = {
    "lenet300_same_task": (("all", "all"), (0, 1)),
    "lenet300_split_classes": (("classes_0_4", "classes_5_9"), (0, 0)),
}


def hessian(x) -> "np.ndarray":
    import numpy as np

    rows = np.hstack([x.reshape(len(x), -1).astype(np.float64), np.ones((len(x), 1))])
    return rows.T @ rows / len(rows)


def diagnose(calibration_samples: int = 10_000, log=print) -> dict:
    import numpy as np

    import tfmot_zip
    from benchmarks.context import evaluate_models
    from benchmarks.environment import versions
    from tfmot_zip import data, training
    from tfmot_zip.apps import zoo

    results = {"versions": versions(), "calibration_samples": calibration_samples, "pairs": {}}
    for name, (task_names, seeds) in PAIRS.items():
        tasks = [data.make_task(t) for t in task_names]
        models = [zoo.train_on_task("lenet_300_100", t, seed=s).model for t, s in zip(tasks, seeds)]
        tests = [t.test for t in tasks]
        # Different images for the two models when they share a task, as two users would have.
        if task_names[0] == task_names[1]:
            calibration = [tasks[0].x_train[:calibration_samples], tasks[1].x_train[calibration_samples : 2 * calibration_samples]]
        else:
            calibration = [t.x_train[:calibration_samples] for t in tasks]
        entry = {"originals": [round(a, 2) for a in evaluate_models(models, tests)], "zipped": {}}
        for label, method in (("mtz-hungarian", "mtz"), ("euclidean", "euclidean")):
            for layers in (("fc1",), ("fc1", "fc2")):
                sharing = {layer: 1.0 for layer in layers}
                for which, calib in (("same images", [t.x_train[:calibration_samples] for t in tasks]), ("own images", calibration)):
                    if which == "own images" and task_names[0] != task_names[1]:
                        continue
                    zipped = tfmot_zip.zip_models(*models, calibration_data=calib, sharing=sharing, method=method)
                    accuracy = [round(a, 2) for a in training.evaluate_tasks(zipped, tests)]
                    key = f"{label} {'+'.join(layers)}" + (f" ({which})" if task_names[0] == task_names[1] else "")
                    entry["zipped"][key] = accuracy
                    log(f"{name:<24} {key:<40} {accuracy[0]:6.2f} / {accuracy[1]:6.2f}")
        if task_names[0] == task_names[1]:
            # With H_A == H_B the MTZ update is plain averaging whatever H is, so zipping fc1 with
            # mean-centred calibration images changes only the pairing cost: the response to the
            # average image no longer dominates it (the weights are still averaged exactly).
            centred = [c - c.mean(axis=0, keepdims=True) for c in [t.x_train[:calibration_samples] for t in tasks]]
            zipped = tfmot_zip.zip_models(*models, calibration_data=centred, sharing={"fc1": 1.0}, method="mtz")
            accuracy = [round(a, 2) for a in training.evaluate_tasks(zipped, tests)]
            entry["zipped"]["mtz-hungarian fc1 (pairing from mean-centred images)"] = accuracy
            log(f"{name:<24} {'mtz-hungarian fc1 (pairing from mean-centred images)':<40} {accuracy[0]:6.2f} / {accuracy[1]:6.2f}")
        h = [hessian(c) for c in (tasks[0].x_train[:calibration_samples], tasks[1].x_train[:calibration_samples])]
        eigen = np.linalg.eigvalsh(h[0])
        entry["hessian_relative_difference"] = round(float(np.linalg.norm(h[0] - h[1]) / np.linalg.norm(h[0])), 4)
        entry["hessian_top_eigen_share"] = round(float(eigen[-1] / eigen.sum()), 4)
        pixels = tasks[0].x_train[:calibration_samples].reshape(calibration_samples, -1).astype(np.float64)
        variance = np.linalg.eigvalsh(np.cov(pixels, rowvar=False))[::-1]
        entry["covariance_top1_share"] = round(float(variance[0] / variance.sum()), 4)
        entry["covariance_top10_share"] = round(float(variance[:10].sum() / variance.sum()), 4)
        log(
            f"{name:<24} fc1 Hessians: ||H_A - H_B|| / ||H_A|| = {entry['hessian_relative_difference']:.3f}; "
            f"top eigenvector holds {entry['hessian_top_eigen_share']:.1%} of the trace; centred: top 1 / top 10 "
            f"principal directions hold {entry['covariance_top1_share']:.1%} / {entry['covariance_top10_share']:.1%} of the variance"
        )
        results["pairs"][name] = entry
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/bench/diagnose.json", help="JSON output file")
    args = parser.parse_args(argv)
    from benchmarks.run import _import_tensorflow_quietly
    from tfmot_zip.io import atomic_write_json, check_writable_dir

    _import_tensorflow_quietly()
    results = diagnose()
    check_writable_dir(Path(args.out).parent)
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
