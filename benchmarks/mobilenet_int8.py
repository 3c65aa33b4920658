"""The trained zoo MobileNetV2 pair (Fashion-MNIST classes 0-4 / 5-9) as one int8 TFLite file.

Zips the pair at sharing 1.0 (``--method``, plus ``--refits`` for the layer and head refits and
the statistics repair; 1,000 calibration images per task), strips it, exports int8 TFLite of the
stripped model and of each original (representative data: the calibration images), verifies the
zipped file in LiteRT against Keras, and measures bytes and batch-1 latency with
``size_latency_report`` (all tasks on one shared input against the two originals run one after
another, in one run). Test accuracy of the int8 file per task is measured on the full test splits.

Run:  nice python -m benchmarks.mobilenet_int8 [--method mtz] [--refits] [--out out/mobilenet_int8.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import tfmot_zip
from tfmot_zip import training
from tfmot_zip.export import TFLiteVerificationError, Tolerance, export_tflite, load_interpreter, tflite_accuracy, verify_tflite
from tfmot_zip.export.size import size_latency_report
from tfmot_zip.io import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="mtz")
    parser.add_argument("--refits", action="store_true")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--out", default="out/mobilenet_int8.json")
    args = parser.parse_args()
    from benchmarks.refit import load_pair

    tasks, trained = load_pair("mobilenet_v2", "split")
    models = [t.model for t in trained]
    calibration = [t.x_train[: args.images] for t in tasks]
    tests = [(t.x_test, t.y_test) for t in tasks]
    start = time.perf_counter()
    zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=1.0, method=args.method,
                                  refit_layers=args.refits, refit_heads=args.refits, repair=args.refits,
                                  task_names=["classes_0_4", "classes_5_9"])
    zip_seconds = time.perf_counter() - start
    stripped = tfmot_zip.strip_zipping(zipped)
    keras_acc = training.evaluate_tasks(zipped, tests)
    blob = export_tflite(stripped, quantize="int8", representative_data=calibration)
    separate = [export_tflite(m, quantize="int8", representative_data=c) for m, c in zip(models, calibration)]
    loose = Tolerance(max_abs=float("inf"))  # measured here; the default tolerances' verdict beside
    sample = [c[:256] for c in calibration]
    verify = verify_tflite(blob, stripped, sample, quantize="int8", tolerance=loose)
    try:
        verify_tflite(blob, stripped, sample, quantize="int8")
        within_default = True
    except TFLiteVerificationError:
        within_default = False
    separate_verify = [verify_tflite(b, m, c[:256], quantize="int8", tolerance=loose) for b, m, c in zip(separate, models, calibration)]
    int8_acc = [list(tflite_accuracy(blob, name, x, y).values())[0] for name, (x, y) in zip(["classes_0_4", "classes_5_9"], tests)]
    separate_int8_acc = [
        list(tflite_accuracy(b, list(load_interpreter(b).get_signature_list())[0], x, y).values())[0]
        for b, (x, y) in zip(separate, tests)
    ]
    report = size_latency_report(stripped, models, [c[:1] for c in calibration], quantize="int8", zipped_tflite=blob,
                                 separate_tflite=separate, runs=200, warmup=20)
    row = {
        "method": args.method, "refits": args.refits, "calibration_images": args.images,
        "zip_seconds": round(zip_seconds, 1),
        "originals_accuracy": [round(t.test_accuracy, 2) for t in trained],
        "zipped_keras_accuracy": [round(a, 2) for a in keras_acc],
        "zipped_int8_accuracy": [round(a, 2) for a in int8_acc],
        "originals_int8_accuracy": [round(a, 2) for a in separate_int8_acc],
        "int8_vs_keras": {k: {"max_abs_error": round(float(v["max_abs_error"]), 4), "argmax_agreement": float(v["argmax_agreement"])} for k, v in verify.items()},
        "originals_int8_vs_keras": [{"max_abs_error": round(float(max(v["max_abs_error"] for v in r.values())), 4),
                                     "argmax_agreement": float(min(v["argmax_agreement"] for v in r.values()))} for r in separate_verify],
        "int8_within_default_tolerance": within_default,
        "size_latency": report,
    }
    print(json.dumps(row, indent=1))
    atomic_write_text(args.out, json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
