"""Layer-wise zipping inside fit (ZipCallback) against one-shot zipping, with a control.

For each pair (Fashion-MNIST classes 0-4 vs 5-9; LeNet-300-100 and LeNet-5), sharing 1.0:

* layer-wise: ``zip_models(..., schedule=LayerwiseSchedule(...))`` + ``fit`` with ZipCallback,
  Hessians accumulated from the training batches, ``budget`` steps in all;
* one-shot: ``zip_models`` (Hessians from 10,000 training images per task) + ``budget`` steps;
* control: the unzipped originals trained on for ``budget`` steps with the same optimizer and
  learning rate (originals that stopped on a noisy epoch gain from any extra training).

Accuracy is evaluated every ``eval_every`` steps once zipping is complete; the first step at
which every task is within 0.5 point of its original gives the ratio "original training
steps / retraining steps" (the paper: at least 17.8x for VGG-16).

Usage:
    python benchmarks/retraining.py [--quick] [--out out/retraining]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def evaluate_curve(model, tasks, budget, eval_every, lr, callbacks=(), seed=0):
    """Trains ``budget`` steps in chunks; returns [(step, accuracies)] after each chunk."""
    from tfmot_zip import data, training

    training.compile_multitask(model, lr)
    curve = []
    done = 0
    while done < budget:
        n = min(eval_every, budget - done)
        model.fit(data.multitask(*[t.train for t in tasks], seed=seed + done), steps_per_epoch=n, epochs=1,
                  verbose=0, callbacks=list(callbacks))
        done += n
        curve.append((done, [round(a, 2) for a in training.evaluate_tasks(model, [t.test for t in tasks])]))
    return curve


def first_within(curve, originals, tolerance=0.5, start=0):
    for step, accs in curve:
        if step >= start and all(o - a <= tolerance for o, a in zip(originals, accs)):
            return step
    return None


def run(arch: str, budget: int, eval_every: int, lr: float, schedule_args: dict, calibration: int, log=print) -> dict:
    import numpy as np

    import tfmot_zip
    from tfmot_zip import data, training, zoo
    from tfmot_zip.compat import keras

    tasks = [data.make_task("classes_0_4"), data.make_task("classes_5_9")]
    trained = [zoo.train_on_task(arch, t, seed=0) for t in tasks]
    originals = [round(100 * t.test_accuracy, 2) for t in trained]
    steps_original = trained[0].train_steps
    log(f"{arch}: originals {originals}, trained {steps_original} steps each")
    result = {"arch": arch, "originals": originals, "original_train_steps": steps_original, "budget": budget,
              "learning_rate": lr}

    # Layer-wise inside fit.
    schedule = tfmot_zip.LayerwiseSchedule(**schedule_args)
    zipped = tfmot_zip.zip_models(*[t.model for t in trained], calibration_data=None, sharing=1.0, schedule=schedule)
    callback = tfmot_zip.ZipCallback()
    start = time.perf_counter()
    curve = evaluate_curve(zipped, tasks, budget, eval_every, lr, [callback])
    zip_end = max(e["global_step"] for e in callback.log)
    result["layerwise"] = {
        "schedule": schedule.get_config(), "zip_log": callback.log, "curve": curve, "final": curve[-1][1],
        "zipping_complete_at_step": zip_end, "seconds": round(time.perf_counter() - start, 1),
        "within_0.5_at_step": first_within(curve, originals, start=zip_end),
    }
    log(f"  layer-wise  : final {curve[-1][1]}  zipping done at step {zip_end}, within 0.5 at "
        f"{result['layerwise']['within_0.5_at_step']}")

    # One-shot then the same budget.
    cal = [t.x_train[:calibration] for t in tasks]
    oneshot = tfmot_zip.zip_models(*[t.model for t in trained], calibration_data=cal, sharing=1.0)
    before = [round(a, 2) for a in training.evaluate_tasks(oneshot, [t.test for t in tasks])]
    curve = evaluate_curve(oneshot, tasks, budget, eval_every, lr)
    result["oneshot"] = {"no_retraining": before, "curve": curve, "final": curve[-1][1],
                         "within_0.5_at_step": first_within(curve, originals)}
    log(f"  one-shot    : before {before} final {curve[-1][1]}, within 0.5 at {result['oneshot']['within_0.5_at_step']}")

    # Control: the originals trained on with the same budget and learning rate.
    control = []
    for t, tr in zip(tasks, trained):
        model = keras.models.clone_model(tr.model)
        model.set_weights(tr.model.get_weights())
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        ds = data.multitask(t.train, seed=1).map(lambda x, y: (x[0], y[0]))
        model.fit(ds, steps_per_epoch=budget, epochs=1, verbose=0)
        control.append(round(training.accuracy(model.predict(t.x_test, verbose=0), t.y_test), 2))
    result["control"] = {"final": control}
    log(f"  control     : originals + {budget} steps at lr {lr}: {control}")
    for key in ("layerwise", "oneshot"):
        step = result[key]["within_0.5_at_step"]
        result[key]["ratio_original_to_retraining"] = round(steps_original / step, 2) if step else None
        result[key]["vs_control"] = [round(a - c, 2) for a, c in zip(result[key]["final"], control)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/retraining")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()

    from tfmot_zip import demo
    from tfmot_zip.io_utils import atomic_write_json, check_writable_dir

    out = check_writable_dir(args.out)
    budget, every = (120, 40) if args.quick else (300, 25)
    results = {"versions": demo._versions(), "runs": []}
    for arch in ("lenet_300_100", "lenet5"):
        schedule = dict(calibration_steps=10, retrain_steps=20, growth=1.5)
        results["runs"].append(run(arch, budget, every, args.lr, schedule, 10_000))
        atomic_write_json(out / "retraining.json", results)
    print(f"wrote {out / 'retraining.json'}")


if __name__ == "__main__":
    main()
