"""keras.applications architectures through the whole chain: zip, strip, TFLite (float and int8).

For each architecture (``weights=None``, 32x32x3 (Xception: 71x71x3, its smallest), ``classes=5``;
two seeds), used directly and nested as a transfer-learning base under a new head (``Sequential([base(include_top=False),
GlobalAveragePooling2D(), Dense(5)])``), or (variant ``keras3``) built by Keras 3's
``keras.applications`` and handed to ``zip_models`` as it is (converted to tf_keras on the way),
with 32 calibration images per task (random, in [0, 1]):

- sharing 0: the largest |difference| between the zipped model's outputs and the originals';
- sharing 1.0: zip time, parameters of the stripped model against the two originals (target
  <= 0.55x), then float and int8 TFLite of the stripped model (one signature per task plus the
  all-tasks signatures), each run in LiteRT against Keras with ``verify_tflite`` (int8: every
  signature's tensors int8): the largest error (in units of max(1, |output|)) and argmax agreement,
  next to the same figures of the first original exported alone, with its BatchNorm statistics
  re-estimated on the same images as zipping does (random weights: int8 calibration of an
  untrained deep network is poor whether zipped or not), and whether the default ``TOLERANCES`` pass.

Run:  nice python -m benchmarks.applications [--arch MobileNetV2 ...] [--variants direct nested keras3]
      [--out out/applications.json] [--doc docs/APPLICATIONS.md]
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback

import numpy as np

import tfmot_zip
from tfmot_zip.compat import keras
from tfmot_zip.export import TFLiteVerificationError, Tolerance, export_tflite, verify_tflite
from tfmot_zip.io import atomic_write_text
from tfmot_zip.model.batchnorm import recalibrate_batchnorm
from tfmot_zip.model.copying import copy_model

SHAPE = (32, 32, 3)
#: Architectures whose smallest input is larger than SHAPE.
SHAPES = {"Xception": (71, 71, 3)}
CLASSES = 5


def _apps(applications=None):
    A = applications or keras.applications
    return {
        "MobileNet": lambda **k: A.MobileNet(alpha=0.25, **k),
        "MobileNetV2": lambda **k: A.MobileNetV2(alpha=0.35, **k),
        "MobileNetV3Small": lambda **k: A.MobileNetV3Small(**k),
        "EfficientNetB0": lambda **k: A.EfficientNetB0(**k),
        "EfficientNetV2B0": lambda **k: A.EfficientNetV2B0(**k),
        "DenseNet121": lambda **k: A.DenseNet121(**k),
        "ResNet50": lambda **k: A.ResNet50(**k),
        "Xception": lambda **k: A.Xception(**k),
    }


def input_shape(arch: str) -> tuple:
    return SHAPES.get(arch, SHAPE)


def build(arch: str, variant: str, seed: int) -> keras.Model:
    """One model: the application itself, its base nested under a new head, or Keras 3's application."""
    shape = input_shape(arch)
    if variant == "keras3":
        import keras as keras3  # Keras 3: the benchmark builds with it, the package never imports it

        keras3.utils.set_random_seed(seed)
        return _apps(keras3.applications)[arch](input_shape=shape, weights=None, classes=CLASSES)
    keras.utils.set_random_seed(seed)
    make = _apps()[arch]
    if variant == "direct":
        return make(input_shape=shape, weights=None, classes=CLASSES)
    base = make(input_shape=shape, weights=None, include_top=False)
    return keras.Sequential(
        [keras.Input(shape), base, keras.layers.GlobalAveragePooling2D(name="pool"),
         keras.layers.Dense(CLASSES, activation="softmax", name="new_head")],
        name=f"{arch.lower()}_tl_{seed}",
    )


def measure(arch: str, variant: str, images: int = 32) -> dict:
    rng = np.random.default_rng(0)
    xa, xb = (rng.random((images,) + input_shape(arch)).astype("float32") for _ in range(2))
    a, b = build(arch, variant, 1), build(arch, variant, 2)
    row: dict = {"arch": arch, "variant": variant, "params_originals": int(a.count_params() + b.count_params())}
    start = time.perf_counter()
    zero = tfmot_zip.zip_models(a, b, calibration_data=(xa, xb), sharing=0.0)
    row["zip_seconds_sharing0"] = round(time.perf_counter() - start, 1)
    za, zb = zero([xa, xb])
    row["max_diff_sharing0"] = float(max(np.abs(np.asarray(za) - a(xa)).max(), np.abs(np.asarray(zb) - b(xb)).max()))
    start = time.perf_counter()
    full = tfmot_zip.zip_models(a, b, calibration_data=(xa, xb), sharing=1.0)
    row["zip_seconds"] = round(time.perf_counter() - start, 1)
    stripped = tfmot_zip.strip_zipping(full)
    row["params_stripped"] = int(stripped.count_params())
    row["params_ratio"] = round(row["params_stripped"] / row["params_originals"], 4)
    fa, fb = full([xa, xb])
    sa, sb = stripped([xa, xb])
    row["max_diff_strip"] = float(max(np.abs(np.asarray(fa) - sa).max(), np.abs(np.asarray(fb) - sb).max()))
    # The reference: the first original with its BatchNorm statistics re-estimated on the same images,
    # as zipping re-estimates the zipped model's (random networks with default statistics give
    # near-constant outputs, which any export reproduces).
    reference = copy_model(tfmot_zip.from_keras3(a) if variant == "keras3" else a)
    recalibrate_batchnorm(reference, [xa])
    loose = Tolerance(max_abs=float("inf"))  # measure; the verdict against TOLERANCES is recorded beside
    for mode in (None, "int8"):
        key = mode or "float"
        try:
            for label, model, data in (("", stripped, (xa, xb)), ("original_", reference, xa)):
                blob = export_tflite(model, quantize=mode, representative_data=data if mode else None)
                report = verify_tflite(blob, model, data, quantize=mode, tolerance=loose)  # tensor types checked
                worst = max(r["max_abs_error"] for r in report.values())
                agreement = min(r["argmax_agreement"] for r in report.values())
                row[f"{label}tflite_{key}_bytes"] = len(blob)
                row[f"{label}tflite_{key}_max_abs_error"] = float(worst)
                row[f"{label}tflite_{key}_argmax_agreement"] = float(agreement)
                if not label:
                    row[f"tflite_{key}_signatures"] = sorted(report)
                    try:
                        verify_tflite(blob, model, data, quantize=mode)
                        row[f"tflite_{key}_within_default_tolerance"] = True
                    except TFLiteVerificationError:
                        row[f"tflite_{key}_within_default_tolerance"] = False
            row[f"tflite_{key}"] = "exported"
        except Exception as err:  # reported in the table, not hidden
            row[f"tflite_{key}"] = f"failed: {type(err).__name__}: {str(err)[:300]}"
    return row


def table(rows: list[dict]) -> str:
    head = ("| architecture | use | sharing 0: max diff | zip s (1.0) | params (two originals) | stripped | ratio "
            "| float TFLite | int8 TFLite |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['arch']} | {r['variant']} | {r['error'][:160]} | | | | | | |")
            continue

        def tfl(k):
            if r[f"tflite_{k}"] != "exported":
                return r[f"tflite_{k}"][:120]
            return (f"{r[f'tflite_{k}_bytes']:,} B, err {r[f'tflite_{k}_max_abs_error']:.1e} (original alone "
                    f"{r[f'original_tflite_{k}_max_abs_error']:.1e}), argmax agr. {r[f'tflite_{k}_argmax_agreement']:.3f} "
                    f"({r[f'original_tflite_{k}_argmax_agreement']:.3f})")

        lines.append(
            f"| {r['arch']} | {r['variant']} | {r['max_diff_sharing0']:.1e} | {r['zip_seconds']} | "
            f"{r['params_originals']:,} | {r['params_stripped']:,} | {r['params_ratio']:.3f} | {tfl('float')} | {tfl('int8')} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="*", default=list(_apps()))
    parser.add_argument("--variants", nargs="*", default=["direct", "nested"], choices=["direct", "nested", "keras3"])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--out", default="out/applications.json")
    args = parser.parse_args()
    rows = []
    if os.path.exists(args.out):  # runs of other architectures are kept
        rows = [r for r in json.load(open(args.out)) if not (r["arch"] in args.arch and r["variant"] in args.variants)]
    for arch in args.arch:
        for variant in args.variants:
            try:
                row = measure(arch, variant, args.images)
            except Exception as err:
                traceback.print_exc()
                row = {"arch": arch, "variant": variant, "error": f"{type(err).__name__}: {err}"}
            print(json.dumps(row), flush=True)
            rows.append(row)
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            atomic_write_text(args.out, json.dumps(rows, indent=1))
    order = list(_apps())
    rows.sort(key=lambda r: (order.index(r["arch"]) if r["arch"] in order else 99, r["variant"]))
    print(table(rows))


if __name__ == "__main__":
    main()
