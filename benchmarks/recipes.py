"""Any recipe of zip_models options on a zoo pair, one JSON line per (sharing, recipe): mean drop
right after zipping (no retraining), 10,000 calibration images per task, full test splits.

Usage: .venv/bin/python benchmarks/recipes.py ARCH split|same METHOD:REFITS:REPAIR[:HEADS][,...] SHARING[,...] [IMAGES [HELDOUT]]
  e.g. benchmarks/recipes.py lenet_300_100 same euclidean:1:1,mtz:1:0,mtz:1:0:least_squares 0.5,1.0
  (REFITS 1: refit_layers and refit_heads; REPAIR 1: repair=True; HEADS: how the heads are refit,
  refit_heads=HEADS, default True (cross-entropy for the softmax heads); IMAGES: calibration images per task,
  default 10,000; HELDOUT: measure on that many training images after the calibration images, with the
  originals' accuracy on them, instead of the test splits: choosing between recipes there is not tuning
  on the test set)
Environment: RELU_PASSES=N runs the layer refit with refit_layers(relu_passes=N) (docs/REFIT.md; the
library's default is 0).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np
import tfmot_zip
from tfmot_zip import data, training
from benchmarks.refit import load_pair  # noqa: E402

if os.environ.get("RELU_PASSES"):  # the layer refit zip_models calls, with relu_passes
    import functools

    from tfmot_zip.zipping import api as _api, refit as _refit

    _api.refit_layers_ = functools.partial(_refit.refit_layers, relu_passes=int(os.environ["RELU_PASSES"]))
arch, pair = sys.argv[1], sys.argv[2]
variants = [tuple((v.split(":") + ["0", "0", ""][v.count(":"):])[:4]) for v in sys.argv[3].split(",")]  # method:refits:repair:heads
sharings = [float(s) for s in sys.argv[4].split(",")]
tasks, trained = load_pair(arch, pair)
models = [t.model for t in trained]
images = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
calib = [t.x_train[:images] for t in tasks]
if len(sys.argv) > 6:  # held-out training images
    held = int(sys.argv[6])
    tests = [(t.x_train[images:images + held], t.y_train[images:images + held]) for t in tasks]
    if any(len(x) < held for x, _ in tests):
        sys.exit(f"HELDOUT={held}: a task has only {min(len(x) for x, _ in tests)} training images after the first {images}.")
    orig = [training.accuracy(m.predict(x, verbose=0), y) for m, (x, y) in zip(models, tests)]
else:
    tests = [(t.x_test, t.y_test) for t in tasks]
    orig = [t.test_accuracy for t in trained]
print("originals", orig, flush=True)
for sharing in sharings:
    for method, refit, rep, heads in variants:
        r = refit == "1"
        t0 = time.time()
        z = tfmot_zip.zip_models(*models, calibration_data=calib, sharing=sharing, method=method, refit_layers=r, refit_heads=(heads or True) if r else False, repair=rep == "1")
        sec = time.time() - t0
        acc = training.evaluate_tasks(z, tests)
        print(json.dumps(dict(arch=arch, pair=pair, sharing=sharing, method=method, refit=r, repair=rep, heads=(heads or "auto") if r else None, acc=[round(a, 2) for a in acc],
                              drop=round(float(np.mean(np.array(orig) - np.array(acc))), 3), sec=round(sec, 1))), flush=True)
