"""The 100-step retraining target of LeNet-300-100 classes 0-4 / 5-9 at sharing 1.0, with other optimizers.

The default zip (``method="mtz+refits"``, 10,000 calibration images per task), then ``STEPS`` joint
steps (one batch of 128 per task per step, hard labels) with each optimizer named, on the data
order of ``--seeds``; prints one JSON line per run with the test accuracies. ``RELU_PASSES=N`` zips
with ``refit_layers(relu_passes=N)`` (docs/REFIT.md).

Usage: .venv/bin/python benchmarks/retrain_optimizers.py [--variants adam_cos_1e-3,...] [--seeds 0,1] [--steps 100]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _variants(keras) -> dict:
    cosine = keras.optimizers.schedules.CosineDecay
    return {
        "adam_cos_1e-3": lambda s: keras.optimizers.Adam(cosine(1e-3, s)),  # benchmarks/retraining.py's
        "adam_warm10_1e-3": lambda s: keras.optimizers.Adam(cosine(0.0, s - 10, warmup_target=1e-3, warmup_steps=10)),
        "adam_warm20_2e-3": lambda s: keras.optimizers.Adam(cosine(0.0, s - 20, warmup_target=2e-3, warmup_steps=20)),
        "sgdm_cos_0.05": lambda s: keras.optimizers.SGD(cosine(0.05, s), momentum=0.9),
        "sgdm_cos_0.1": lambda s: keras.optimizers.SGD(cosine(0.1, s), momentum=0.9),
    }


def main() -> None:
    import tfmot_zip
    from tfmot_zip import data, training
    from tfmot_zip.compat import keras

    from benchmarks.refit import load_pair

    variants = _variants(keras)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(variants))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    if os.environ.get("RELU_PASSES"):
        from tfmot_zip.zipping import api, refit

        api.refit_layers_ = functools.partial(refit.refit_layers, relu_passes=int(os.environ["RELU_PASSES"]))
    tasks, trained = load_pair("lenet_300_100", "split")
    models = [t.model for t in trained]
    calibration = [t.x_train[:10000] for t in tasks]
    for name in args.variants.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            keras.utils.set_random_seed(seed)
            zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=1.0, progress=False)
            training.compile_multitask(zipped, 1e-3, decay_steps=args.steps)  # the losses per task
            zipped.compile(optimizer=variants[name](args.steps), loss=zipped.loss)
            zipped.fit(data.multitask(*[t.train for t in tasks], seed=seed), steps_per_epoch=args.steps, epochs=1, verbose=0)
            accuracy = [round(a, 2) for a in training.evaluate_tasks(zipped, [t.test for t in tasks])]
            print(json.dumps({"variant": name, "seed": seed, "steps": args.steps, "accuracy": accuracy}), flush=True)


if __name__ == "__main__":
    main()
