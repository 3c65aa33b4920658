"""ResNet-20 (zoo, classes 0-4 / 5-9, 10,000 training images, 4 epochs) zipped at sharing 1.0 and 0.5
with the paper's MTZ, the head refit, both refits and Euclidean + both refits (the heads fitted by their
cross-entropy, and by least squares to the original logits as before session 17); 128 calibration images
per task (argument 1), first 2,000 test images per task; mean drop without retraining.

Usage: .venv/bin/python benchmarks/refit_resnet20.py [calibration images per task]
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np
import tfmot_zip
from tfmot_zip import data, training
from tfmot_zip.apps import zoo

tasks = [data.make_task("classes_0_4"), data.make_task("classes_5_9")]
trained = [zoo.train_on_task("resnet20", t, seed=0, epochs=4, max_train_samples=10_000, verbose=0) for t in tasks]
models = [t.model for t in trained]
calib = [t.x_train[:int(sys.argv[1]) if len(sys.argv) > 1 else 128] for t in tasks]
tests = [(t.x_test[:2000], t.y_test[:2000]) for t in tasks]
orig = [training.evaluate_tasks(m, [tt])[0] for m, tt in zip(models, tests)]
print("originals", orig, flush=True)
rows = []
for sharing in (1.0, 0.5):
    for method, rl, rh in (("mtz", False, False), ("mtz", False, True), ("mtz", False, "least_squares"), ("mtz", True, True),
                           ("mtz", True, "least_squares"), ("euclidean", True, True)):
        t0 = time.time()
        try:
            z = tfmot_zip.zip_models(*models, calibration_data=calib, sharing=sharing, method=method, refit_layers=rl, refit_heads=rh)
        except Exception as e:
            print(sharing, method, rl, rh, "ERROR", repr(e)[:300], flush=True); continue
        sec = time.time() - t0
        acc = training.evaluate_tasks(z, tests)
        drop = float(np.mean(np.array(orig) - np.array(acc)))
        rows.append(dict(sharing=sharing, method=method, refit_layers=rl, refit_heads=rh, acc=acc, drop=drop, sec=sec))
        print(rows[-1], flush=True)
os.makedirs("out", exist_ok=True)
from tfmot_zip.io import atomic_write_json  # noqa: E402

atomic_write_json("out/refit_resnet20.json", rows)
