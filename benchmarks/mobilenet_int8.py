"""The trained zoo MobileNetV2 pair (Fashion-MNIST classes 0-4 / 5-9) as one int8 TFLite file.

Zips the pair at sharing 1.0 (``--method``, plus ``--refits`` for the layer and head refits and
the statistics repair; 1,000 calibration images per task), strips it, exports int8 TFLite of the
stripped model and of each original (representative data: the calibration images), verifies the
zipped file in LiteRT against Keras, and measures bytes and batch-1 latency with
``size_latency_report`` (all tasks on one shared input against the two originals run one after
another, in one run). Test accuracy of the int8 file per task is measured on the full test splits.

``--fold`` folds every BatchNormalization of both trained originals into the preceding convolution
first (:func:`tfmot_zip.fold_batchnorm`) and zips the folded pair with ``single_input=True``, so a
shared unit is one weight copy computed once on the shared input; the int8 originals (with their
BatchNorm, as the converter folds it anyway) stay the reference. ``--retrain-steps N`` retrains the
zipped model jointly on both tasks' training data for N steps (one batch of 128 per task per step,
Adam with a cosine decay from ``--learning-rate`` to 0, as benchmarks/retraining.py) before stripping.
With ``--fold`` the report also says how the int8 file's bytes split into weight buffers (stored
once for all signatures) and per-signature tensor metadata, and measures a one-signature int8 file
of the same stripped model (the all-tasks-on-one-input function alone).

Run:  nice python -m benchmarks.mobilenet_int8 [--method mtz] [--refits [--no-repair]] [--fold] [--retrain-steps N]
      [--out out/mobilenet_int8.json]
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

TASKS = ["classes_0_4", "classes_5_9"]


def interleave(arrays: list) -> np.ndarray:
    """One array taking the tasks' samples in turn (a, b, a, b, ...), so every prefix holds every task."""
    n = min(len(a) for a in arrays)
    return np.stack([a[:n] for a in arrays], 1).reshape((-1,) + arrays[0].shape[1:])


def tflite_parts(blob: bytes) -> dict:
    """Where the bytes of a TFLite file go: constant buffers (weights, stored once and read by every
    signature that uses them) against each signature's own subgraph (tensor names, quantization
    parameters)."""
    from tfmot_zip.export.flatbuffer import _schema

    model = _schema().Model.GetRootAs(blob, 0)
    sizes = [model.Buffers(b).DataLength() for b in range(model.BuffersLength())]
    signatures = {}
    for s in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(s)
        graph = model.Subgraphs(signature.SubgraphIndex())
        used, names, quantization = set(), 0, 0
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            used.add(tensor.Buffer())
            names += len(tensor.Name() or b"")
            q = tensor.Quantization()
            if q is not None:  # float32 scales, int64 zero points (per channel for weights)
                quantization += 4 * q.ScaleLength() + 8 * q.ZeroPointLength() + 4 * (q.MinLength() + q.MaxLength())
        signatures[signature.SignatureKey().decode()] = {
            "weight_bytes_read": int(sum(sizes[b] for b in used)), "tensors": graph.TensorsLength(),
            "operators": graph.OperatorsLength(), "tensor_name_bytes": names, "quantization_param_bytes": quantization,
        }
    return {"file_bytes": len(blob), "weight_buffer_bytes": int(sum(sizes)), "signatures": signatures}


def retrain_single_input(zipped, tasks, steps: int, learning_rate: float, seed: int = 0) -> None:
    """Joint retraining of a single-input zipped model: a two-input wrapper calls it once per task's
    batch and keeps that task's output (shared weights, each head trained on its own task's data)."""
    from tfmot_zip.compat import keras

    inputs = [keras.Input(zipped.input_shape[1:], name=f"{name}_input") for name in TASKS]
    outputs = [keras.layers.Identity(name=name)(zipped(x)[t]) for t, (name, x) in enumerate(zip(TASKS, inputs))]
    trainer = keras.Model(inputs, outputs, name="joint_trainer")
    training.compile_multitask(trainer, learning_rate, decay_steps=steps)
    training.retrain(trainer, [t.train for t in tasks], steps, seed=seed)


def one_signature_int8(stripped, representative, samples: int = 400) -> bytes:
    """int8 TFLite of the stripped model with only its all-tasks signature (one input for every task),
    through the library's ``export_tflite(..., signatures=[...])``."""
    from tfmot_zip.export.signatures import ALL_TASKS, ALL_TASKS_SHARED_INPUT, plan_signatures

    keys = [p.key for p in plan_signatures(stripped)]
    key = ALL_TASKS_SHARED_INPUT if ALL_TASKS_SHARED_INPUT in keys else ALL_TASKS
    return export_tflite(stripped, quantize="int8", representative_data=representative, representative_samples=samples,
                         signatures=[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="mtz")
    parser.add_argument("--refits", action="store_true")
    parser.add_argument("--no-repair", action="store_true",
                        help="with --refits: layer and head refits only (the repair keeps a per-task affine after every shared layer)")
    parser.add_argument("--fold", action="store_true", help="fold BatchNorm into the convolutions before zipping (single input)")
    parser.add_argument("--retrain-steps", type=int, default=0, help="joint retraining steps before stripping")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--out", default="out/mobilenet_int8.json")
    args = parser.parse_args()
    if args.retrain_steps < 0:
        parser.error(f"--retrain-steps must be >= 0; received {args.retrain_steps}")
    from benchmarks.refit import load_pair

    tasks, trained = load_pair("mobilenet_v2", "split")
    models = [t.model for t in trained]
    calibration = [t.x_train[: args.images] for t in tasks]
    tests = [(t.x_test, t.y_test) for t in tasks]
    fold_error = None
    if args.fold:
        zip_inputs = [tfmot_zip.fold_batchnorm(m) for m in models]
        fold_error = max(float(np.abs(f.predict(x[:500], verbose=0) - m.predict(x[:500], verbose=0)).max())
                         for f, m, (x, _) in zip(zip_inputs, models, tests))
    else:
        zip_inputs = models
    start = time.perf_counter()
    zipped = tfmot_zip.zip_models(*zip_inputs, calibration_data=calibration, sharing=1.0, method=args.method,
                                  refit_layers=args.refits, refit_heads=args.refits, repair=args.refits and not args.no_repair,
                                  task_names=TASKS, single_input=args.fold)
    zip_seconds = time.perf_counter() - start
    zipped_no_retraining_acc = training.evaluate_tasks(zipped, tests)
    retrain_seconds = None
    if args.retrain_steps:
        start = time.perf_counter()
        if args.fold:
            retrain_single_input(zipped, tasks, args.retrain_steps, args.learning_rate)
        else:
            training.compile_multitask(zipped, args.learning_rate, decay_steps=args.retrain_steps)
            training.retrain(zipped, [t.train for t in tasks], args.retrain_steps)
        retrain_seconds = time.perf_counter() - start
    stripped = tfmot_zip.strip_zipping(zipped)
    keras_acc = training.evaluate_tasks(zipped, tests)
    representative = interleave(calibration) if args.fold else calibration
    blob = export_tflite(stripped, quantize="int8", representative_data=representative)
    separate = [export_tflite(m, quantize="int8", representative_data=c) for m, c in zip(models, calibration)]
    loose = Tolerance(max_abs=float("inf"))  # measured here; the default tolerances' verdict beside
    sample = interleave([c[:128] for c in calibration]) if args.fold else [c[:256] for c in calibration]
    verify = verify_tflite(blob, stripped, sample, quantize="int8", tolerance=loose)
    try:
        verify_tflite(blob, stripped, sample, quantize="int8")
        within_default = True
    except TFLiteVerificationError:
        within_default = False
    separate_verify = [verify_tflite(b, m, c[:256], quantize="int8", tolerance=loose) for b, m, c in zip(separate, models, calibration)]
    int8_acc = [list(tflite_accuracy(blob, name, x, y).values())[0] for name, (x, y) in zip(TASKS, tests)]
    separate_int8_acc = [
        list(tflite_accuracy(b, list(load_interpreter(b).get_signature_list())[0], x, y).values())[0]
        for b, (x, y) in zip(separate, tests)
    ]
    samples = calibration[0][:1] if args.fold else [c[:1] for c in calibration]
    report = size_latency_report(stripped, models, samples, quantize="int8", zipped_tflite=blob,
                                 separate_tflite=separate, runs=200, warmup=20)
    row = {
        "method": args.method, "refits": args.refits, "repair": args.refits and not args.no_repair, "fold": args.fold, "single_input": args.fold,
        "retrain_steps": args.retrain_steps, "learning_rate": args.learning_rate if args.retrain_steps else None,
        "calibration_images": args.images,
        "fold_max_abs_error": fold_error,
        "zip_seconds": round(zip_seconds, 1),
        "retrain_seconds": None if retrain_seconds is None else round(retrain_seconds, 1),
        "originals_accuracy": [round(t.test_accuracy, 2) for t in trained],
        "zipped_keras_accuracy_no_retraining": [round(a, 2) for a in zipped_no_retraining_acc],
        "zipped_keras_accuracy": [round(a, 2) for a in keras_acc],
        "zipped_int8_accuracy": [round(a, 2) for a in int8_acc],
        "originals_int8_accuracy": [round(a, 2) for a in separate_int8_acc],
        "int8_vs_keras": {k: {"max_abs_error": round(float(v["max_abs_error"]), 4), "argmax_agreement": float(v["argmax_agreement"])} for k, v in verify.items()},
        "originals_int8_vs_keras": [{"max_abs_error": round(float(max(v["max_abs_error"] for v in r.values())), 4),
                                     "argmax_agreement": float(min(v["argmax_agreement"] for v in r.values()))} for r in separate_verify],
        "int8_within_default_tolerance": within_default,
        "size_latency": report,
    }
    if args.fold:
        row["int8_file_parts"] = {"zipped": tflite_parts(blob), "originals": [tflite_parts(b) for b in separate]}
        single = one_signature_int8(stripped, representative)
        key = list(load_interpreter(single).get_signature_list())[0]
        outputs = tflite_accuracy(single, key, tests[0][0], [tests[0][1]] * 2)  # every output on task 0-4's data
        outputs_b = tflite_accuracy(single, key, tests[1][0], [tests[1][1]] * 2)
        names = list(outputs)  # output order of the converted file; find each task's by its accuracy name
        by_task = [outputs[n] for n in names if "0_4" in n] + [outputs_b[n] for n in names if "5_9" in n]
        one = size_latency_report(stripped, models, samples, quantize="int8", zipped_tflite=single,
                                  separate_tflite=separate, runs=200, warmup=20)
        latency = one["zipped"]["signatures"][key]["invoke_ms"] / one["separate_total"]["latency_sequential"]["invoke_ms"]
        row["one_signature_int8"] = {
            "output_names": names, "accuracy": [round(a, 2) for a in by_task] if len(by_task) == 2 else {"task_0_4_data": outputs, "task_5_9_data": outputs_b},
            "tflite_bytes": len(single), "bytes_ratio": len(single) / one["separate_total"]["tflite_bytes"],
            "latency_ratio": latency, "parts": tflite_parts(single), "size_latency": one,
        }
    print(json.dumps(row, indent=1))
    atomic_write_text(args.out, json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
