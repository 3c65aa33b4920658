"""Layer-wise zipping inside fit (ZipCallback) against one-shot zipping, with a control.

For each pair (Fashion-MNIST classes 0-4 vs 5-9; LeNet-300-100 and LeNet-5 by default, any zoo
architecture with ``--arch``), sharing 1.0, and each retraining budget ``B`` (steps, one batch of
128 per task per step, Adam with a cosine decay from 1e-3, or ``--learning-rate``, to 0 over ``B``):

* layer-wise: ``zip_models(..., schedule=LayerwiseSchedule(...))`` + ``fit`` for ``B`` steps with
  ZipCallback: each layer's Hessians from the same 10,000 images per task as one-shot (run
  through the partly zipped, partly retrained model), zipping spread over the first half of
  the budget, the rest retrains the fully zipped model;
* layer-wise/batches: the same, with Hessians accumulated from training batches (``B / (4 x
  layers)`` batches per layer) instead of calibration data;
* one-shot: ``zip_models(method="mtz")``, the paper's method (Hessians from 10,000 training images per task; conv Hessians as
  ``--conv-hessian``, default "auto") + ``B`` steps;
* one-shot+ (variant ``oneshot_plus``, not in the default list): the one-shot zip with the options
  that go past the paper (``--plus``, default ``method="mtz+refits"``, the library's default) + ``B`` steps;
* control: the unzipped originals trained on for ``B`` steps with the same optimizer (originals
  that stopped on a noisy epoch gain from any extra training; this keeps the comparison fair).

``--batch-size N`` (default 128) changes the batch per task per step of every variant and of the
control alike: the step count stays the budget, each step sees more data.

``--seed S`` (default 0) sets the retraining data order: the zipped variants shuffle task ``i`` with
seed ``S + i``, the control with ``S + 1``, and ``keras.utils.set_random_seed(S)`` runs before each
variant's zipping and training (the global seed enters tf.data's shuffle order). The originals
are always the zoo's seed-0 networks, so other seeds measure the run-to-run noise of the retraining.

The smallest budget at which every task is within 0.5 point of its original gives the ratio
"steps the originals were trained for / retraining steps" (the paper: >= 17.8x on VGG-16).

Usage:
    python benchmarks/retraining.py [--quick] [--out out/retraining] [--arch lenet5_caffe ...]
        [--budgets 100,200,235,300,500] [--variants oneshot,layerwise,layerwise_batches,control]
        [--conv-hessian auto|exact|block] [--learning-rate 1e-3] [--seed 0] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LEARNING_RATE = 1e-3
BATCH_SIZE = 128
DEFAULT_ARCHS = ("lenet_300_100", "lenet5")
DEFAULT_BUDGETS = (100, 200, 235, 300, 500)
VARIANTS = ("oneshot", "layerwise", "layerwise_batches", "control")
ZIPPED_VARIANTS = ("oneshot", "layerwise", "layerwise_batches", "oneshot_plus")
#: The one-shot zip that goes past the paper (variant "oneshot_plus"; ``--plus`` overrides it).
PLUS_OPTIONS = {"method": "mtz+refits"}


def _fit(model, tasks, budget, callbacks=(), seed=0, learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE):
    from tfmot_zip import data, training

    training.compile_multitask(model, learning_rate, decay_steps=budget)
    model.fit(data.multitask(*[t.train for t in tasks], seed=seed, batch_size=batch_size), steps_per_epoch=budget, epochs=1,
              verbose=0, callbacks=list(callbacks))
    return [round(a, 2) for a in training.evaluate_tasks(model, [t.test for t in tasks])]


def layerwise_schedule(budget: int, stages: int, from_batches: bool):
    """Zipping spread over the first half of the budget (calibration batches included)."""
    import tfmot_zip

    calibration = max(5, budget // (4 * stages)) if from_batches else 0
    retrain = max(0, (budget // 2 - stages * calibration) // stages)
    return tfmot_zip.LayerwiseSchedule(calibration_steps=calibration, retrain_steps=retrain)


def _set_seed(seed: int) -> None:
    from tfmot_zip.compat import keras

    keras.utils.set_random_seed(seed)


def control_accuracy(trained, tasks, budget, learning_rate=LEARNING_RATE, seed=0, batch_size=BATCH_SIZE):
    """The originals trained on for ``budget`` steps; data order seed ``seed + 1`` (1 at the default)."""
    from tfmot_zip import data, training
    from tfmot_zip.compat import keras

    out = []
    _set_seed(seed)
    for t, tr in zip(tasks, trained):
        model = keras.models.clone_model(tr.model)
        model.set_weights(tr.model.get_weights())
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, budget)
        model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy")
        ds = data.multitask(t.train, seed=seed + 1, batch_size=batch_size).map(lambda x, y: (x[0], y[0]))
        model.fit(ds, steps_per_epoch=budget, epochs=1, verbose=0)
        out.append(round(training.accuracy(model.predict(t.x_test, verbose=0), t.y_test), 2))
    return out


def within(accs, originals, tolerance=0.5):
    return all(o - a <= tolerance for o, a in zip(originals, accs))


def run(arch: str, budgets, log=print, batches: bool = True, variants=VARIANTS, conv_hessian: str = "auto",
        learning_rate: float = LEARNING_RATE, seed: int = 0, plus_options: dict | None = None,
        batch_size: int = BATCH_SIZE) -> dict:
    """One architecture: originals, one-shot zip without retraining, then each budget's ``variants``.

    ``batches=False`` drops "layerwise_batches" (kept for callers of the old signature);
    ``conv_hessian`` applies to the one-shot zips (the layer-wise ones use the library default).
    ``seed`` is the retraining data-order seed (see the module docstring); the originals stay seed 0.
    ``batch_size``: examples per task per step, for every variant and the control.
    """
    import tfmot_zip
    from tfmot_zip import data, training
    from tfmot_zip.apps import zoo

    tasks = [data.make_task("classes_0_4"), data.make_task("classes_5_9")]
    trained = [zoo.train_on_task(arch, t, seed=0) for t in tasks]
    models = [t.model for t in trained]
    originals = [round(t.test_accuracy, 2) for t in trained]
    steps_original = trained[0].train_steps
    log(f"{arch}: originals {originals}, trained {steps_original} steps each; retraining seed {seed}")
    cal = [t.x_train[:10_000] for t in tasks]
    _set_seed(seed)
    start = time.perf_counter()
    oneshot_zip = tfmot_zip.zip_models(*models, calibration_data=cal, sharing=1.0, conv_hessian=conv_hessian, method="mtz")
    zip_seconds = time.perf_counter() - start
    no_retraining = [round(a, 2) for a in training.evaluate_tasks(oneshot_zip, [t.test for t in tasks])]
    stages = len(tfmot_zip.zip_summary(oneshot_zip).layers) - 1
    variants = [v for v in variants if batches or v != "layerwise_batches"]
    result = {"arch": arch, "originals": originals, "original_train_steps": steps_original,
              "no_retraining": no_retraining, "zip_seconds": round(zip_seconds, 2), "learning_rate": learning_rate,
              "seed": seed, "batch_size": batch_size, "conv_hessian": conv_hessian, "variants": list(variants), "rows": []}
    log(f"  one-shot zip (no retraining): {no_retraining} in {zip_seconds:.1f} s")
    for budget in budgets:
        started = time.perf_counter()
        row = {"budget": budget}
        if "oneshot" in variants:
            _set_seed(seed)
            z = tfmot_zip.zip_models(*models, calibration_data=cal, sharing=1.0, conv_hessian=conv_hessian, method="mtz")
            row["oneshot"] = _fit(z, tasks, budget, seed=seed, learning_rate=learning_rate, batch_size=batch_size)
        if "oneshot_plus" in variants:
            _set_seed(seed)
            z = tfmot_zip.zip_models(*models, calibration_data=cal, sharing=1.0, conv_hessian=conv_hessian,
                                     **(plus_options or PLUS_OPTIONS))
            row["oneshot_plus_no_retraining"] = [round(a, 2) for a in training.evaluate_tasks(z, [t.test for t in tasks])]
            row["oneshot_plus"] = _fit(z, tasks, budget, seed=seed, learning_rate=learning_rate, batch_size=batch_size)
        for key, callback_data in (("layerwise", cal), ("layerwise_batches", None)):
            if key not in variants:
                continue
            schedule = layerwise_schedule(budget, stages, from_batches=callback_data is None)
            row[f"{key}_schedule"] = schedule.get_config()["config"]
            _set_seed(seed)
            z = tfmot_zip.zip_models(*models, calibration_data=None, sharing=1.0, schedule=schedule)
            callback = tfmot_zip.ZipCallback(calibration_data=callback_data)
            row[key] = _fit(z, tasks, budget, [callback], seed=seed, learning_rate=learning_rate, batch_size=batch_size)
            row[f"{key}_zipped_at"] = [e["global_step"] for e in callback.log]
            assert not tfmot_zip.zipping.callbacks.pending_layers(z)
        if "control" in variants:
            row["control"] = control_accuracy(trained, tasks, budget, learning_rate=learning_rate, seed=seed,
                                              batch_size=batch_size)
        for key in [k for k in ZIPPED_VARIANTS if k in row]:
            row[f"{key}_within_0.5"] = within(row[key], originals)
            if "control" in row:
                row[f"{key}_vs_control"] = [round(a - c, 2) for a, c in zip(row[key], row["control"])]
        row["seconds"] = round(time.perf_counter() - started, 1)
        result["rows"].append(row)
        parts = []
        for key, label in (("oneshot", "one-shot"), ("oneshot_plus", "one-shot+"), ("layerwise", "layer-wise"),
                           ("layerwise_batches", "layer-wise/batches")):
            if key in row:
                zipped_at = f" (zipped at {row[key + '_zipped_at']})" if key == "layerwise" else ""
                parts.append(f"{label} {row[key]} {'ok' if row[key + '_within_0.5'] else '  '}{zipped_at}")
        if "control" in row:
            parts.append(f"control {row['control']}")
        log(f"  B={budget:4d}: " + "   ".join(parts) + f"   [{row['seconds']} s]")
    for key in [k for k in ZIPPED_VARIANTS if result["rows"] and f"{k}_within_0.5" in result["rows"][0]]:
        passing = [r["budget"] for r in result["rows"] if r[f"{key}_within_0.5"]]
        result[f"{key}_budget_needed"] = min(passing) if passing else None
        result[f"{key}_ratio"] = round(steps_original / min(passing), 2) if passing else None
    log("  smallest budget within 0.5: " + ", ".join(
        f"{k} {result.get(k + '_budget_needed')} (ratio {result.get(k + '_ratio')})"
        for k in ZIPPED_VARIANTS if k + "_ratio" in result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/retraining")
    parser.add_argument("--quick", action="store_true", help="budgets 100 and 200 only")
    parser.add_argument("--arch", action="append", default=None,
                        help=f"zoo architecture(s), repeatable or comma-separated (default: {','.join(DEFAULT_ARCHS)})")
    parser.add_argument("--budgets", default=None,
                        help=f"comma-separated retraining budgets in steps (default: {','.join(map(str, DEFAULT_BUDGETS))})")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS + ('oneshot_plus',))} "
                             f"(default: {','.join(VARIANTS)})")
    parser.add_argument("--plus", default=json.dumps(PLUS_OPTIONS),
                        help=f"zip_models options of the oneshot_plus variant, as JSON (default: {json.dumps(PLUS_OPTIONS)})")
    parser.add_argument("--conv-hessian", default="auto", choices=("auto", "exact", "block"),
                        help="conv Hessians of the one-shot zips (default: auto)")
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                        help=f"peak Adam learning rate of the retraining and the control (default: {LEARNING_RATE})")
    parser.add_argument("--seed", type=int, default=0,
                        help="retraining data-order seed of the zipped variants and the control; the originals "
                             "stay the zoo's seed 0 (default: 0)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"examples per task per step, every variant and the control (default: {BATCH_SIZE})")
    args = parser.parse_args()

    from tfmot_zip.apps import zoo

    archs = [a.strip() for value in (args.arch or list(DEFAULT_ARCHS)) for a in value.split(",") if a.strip()]
    for arch in archs:
        if arch not in zoo.ARCHITECTURES:
            parser.error(f"unknown --arch {arch!r}; known: {', '.join(zoo.ARCHITECTURES)}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    known = VARIANTS + ("oneshot_plus",)
    if not variants or any(v not in known for v in variants):
        parser.error(f"--variants must be a comma-separated subset of {','.join(known)}; received {args.variants!r}")
    try:
        plus = json.loads(args.plus)
    except json.JSONDecodeError as err:
        parser.error(f"--plus must be a JSON object of zip_models options; {err}; received {args.plus!r}")
    if not isinstance(plus, dict):
        parser.error(f"--plus must be a JSON object of zip_models options; received {args.plus!r}")
    if args.budgets is not None:
        try:
            budgets = tuple(int(b) for b in args.budgets.split(",") if b.strip())
        except ValueError:
            budgets = ()
        if not budgets or any(b <= 0 for b in budgets):
            parser.error(f"--budgets must be positive integers separated by commas; received {args.budgets!r}")
    else:
        budgets = (100, 200) if args.quick else DEFAULT_BUDGETS
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer; received {args.seed}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer; received {args.batch_size}")
    if not args.learning_rate > 0:
        parser.error(f"--learning-rate must be positive; received {args.learning_rate}")

    from tfmot_zip.io import versions
    from tfmot_zip.io import atomic_write_json, check_writable_dir

    out = check_writable_dir(args.out)
    results = {"versions": versions(), "runs": []}
    for arch in archs:
        started = time.perf_counter()
        results["runs"].append(run(arch, budgets, variants=variants, conv_hessian=args.conv_hessian,
                                   learning_rate=args.learning_rate, seed=args.seed, plus_options=plus,
                                   batch_size=args.batch_size))
        results["runs"][-1]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"  {arch}: {results['runs'][-1]['seconds']} s", flush=True)
        atomic_write_json(out / "retraining.json", results)
    print(f"wrote {out / 'retraining.json'}")


if __name__ == "__main__":
    main()
