"""What zipping costs, next to one forward pass of the same calibration data through the originals.

Each configuration runs in its own process (so its peak resident memory is its own): the models
(random weights: the cost does not depend on training), ``N`` calibration images per task, one
forward pass of those images through every original (after a warm-up call, batches of 256; the fastest of three), then
``zip_models(..., sharing=1.0, method="mtz")`` (``--method``) timed from the call to its return (tracing included), and the peak
resident set size of the process. Wall seconds and the process's CPU seconds (all threads) are both
reported: on a shared machine the CPU seconds vary less with the load. Across the CIFAR ResNet family (depths 20/32/56/110) a straight
line and a parabola are fitted to zip time against depth.

Configurations: ``lenet5`` (2 models, 10,000 images), ``lenet5x3`` (3 models, 10,000), ``resnet20``
... ``resnet110`` (500 images), ``ResNet50`` and ``MobileNetV2`` (keras.applications, 32x32x3,
``weights=None``, alpha 0.35; 256 images), and ``ResNet50_2048_tfdata`` (2,048 images per task given
as ``tf.data`` datasets in batches of 64, read from ``.npy`` files on disk as a calibration set larger
than memory would be; the benchmark's own arrays are dropped after the forward pass, so the peak
memory, against the 256-image run, is the zip's).

Run:  nice python -m benchmarks.zip_cost [--configs resnet20 ResNet50 ...] [--out out/zip_cost.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

CONFIGS = {
    "lenet5": ("zoo", "lenet5", 2, 10_000),
    "lenet5x3": ("zoo", "lenet5", 3, 10_000),
    "resnet20": ("zoo", "resnet20", 2, 500),
    "resnet32": ("zoo", "resnet32", 2, 500),
    "resnet56": ("zoo", "resnet56", 2, 500),
    "resnet110": ("zoo", "resnet110", 2, 500),
    "ResNet50": ("apps", "ResNet50", 2, 256),
    "ResNet50_2048_tfdata": ("apps", "ResNet50", 2, 2048),
    "MobileNetV2": ("apps", "MobileNetV2", 2, 256),
}


def _models(source: str, arch: str, count: int):
    from tfmot_zip.compat import keras

    models = []
    for seed in range(count):
        keras.utils.set_random_seed(seed + 1)
        if source == "zoo":
            from tfmot_zip.apps import zoo

            models.append(zoo.build_model(arch, num_classes=5, name=f"{arch}_{seed}"))
        else:
            make = getattr(keras.applications, arch)
            extra = {"alpha": 0.35} if arch == "MobileNetV2" else {}
            models.append(make(input_shape=(32, 32, 3), weights=None, classes=5, **extra))
    return models


def _streamed(images: np.ndarray, path: str):
    """A ``tf.data`` dataset of ``images`` in batches of 64, read back from a ``.npy`` file at ``path``."""
    from tfmot_zip.compat import tf

    np.save(path, images)

    def batches():
        stored = np.load(path, mmap_mode="r")
        for start in range(0, len(stored), 64):
            yield np.array(stored[start : start + 64])

    return tf.data.Dataset.from_generator(batches, output_signature=tf.TensorSpec((None,) + images.shape[1:], tf.float32))


def measure_one(name: str, method: str = "mtz", activation_memory_mb: float | None = 256.0) -> dict:
    """Runs in the child process."""
    import tfmot_zip

    source, arch, count, images = CONFIGS[name]
    models = _models(source, arch, count)
    shape = tuple(models[0].input_shape[1:])
    rng = np.random.default_rng(0)
    data = [rng.random((images,) + shape).astype("float32") for _ in models]
    calibration = data
    for model, x in zip(models, data):  # warm-up (graph building), not timed
        model.predict(x[:256], batch_size=256, verbose=0)
    forward = forward_cpu = float("inf")
    for _ in range(3):  # the fastest of three passes (the ratio is then the least flattering)
        start, cpu = time.perf_counter(), time.process_time()
        for model, x in zip(models, data):
            model.predict(x, batch_size=256, verbose=0)
        forward, forward_cpu = min(forward, time.perf_counter() - start), min(forward_cpu, time.process_time() - cpu)
    with tempfile.TemporaryDirectory() as folder:
        if name.endswith("_tfdata"):  # streamed from files through tf.data in batches of 64
            calibration = [_streamed(x, os.path.join(folder, f"task{t}.npy")) for t, x in enumerate(data)]
            del data, x  # the zip's memory, not the benchmark's copies
        start, cpu = time.perf_counter(), time.process_time()
        tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=1.0, calibration_samples=None, progress=False,
                             method=method, activation_memory_mb=activation_memory_mb)
        zip_seconds, zip_cpu = time.perf_counter() - start, time.process_time() - cpu
    depth = sum(1 for l in models[0].layers if type(l).__name__ in ("Conv2D", "Dense", "DepthwiseConv2D"))
    return {
        "config": name, "method": method, "activation_memory_mb": activation_memory_mb, "models": count, "images_per_task": images, "zip_layers_per_model": depth,
        "forward_seconds": round(forward, 3), "zip_seconds": round(zip_seconds, 2),
        "zip_over_forward": round(zip_seconds / forward, 1),
        "forward_cpu_seconds": round(forward_cpu, 3), "zip_cpu_seconds": round(zip_cpu, 2),
        "zip_over_forward_cpu": round(zip_cpu / forward_cpu, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--method", default="mtz", help="zip_models method (default: mtz, the paper's; the library's default is mtz+refits)")
    parser.add_argument("--out", default="out/zip_cost.json")
    parser.add_argument("--activation-memory-mb", default="256",
                        help="zip_models(activation_memory_mb=...): MB of cached activations kept in memory ('none': no limit)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory = None if args.activation_memory_mb.lower() == "none" else float(args.activation_memory_mb)
        print(json.dumps(measure_one(args.child, args.method, memory)))
        return
    rows = []
    for name in args.configs:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.zip_cost", "--child", name, "--method", args.method,
                               "--activation-memory-mb", args.activation_memory_mb],
                              capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        row = json.loads(lines[-1]) if lines else {"config": name, "error": proc.stderr[-800:]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    family = [r for r in rows if r["config"].startswith("resnet") and "error" not in r]
    summary = {}
    if len(family) >= 3:
        depth = np.array([r["zip_layers_per_model"] for r in family], float)
        for key in ("zip_seconds", "zip_cpu_seconds"):
            seconds = np.array([r[key] for r in family], float)
            slope, intercept = np.polyfit(depth, seconds, 1)
            quad = np.polyfit(depth, seconds, 2)
            summary[key] = {"linear_fit": {"seconds_per_layer": round(float(slope), 3), "intercept": round(float(intercept), 2)},
                            "quadratic_coefficient": float(quad[0]),
                            "seconds_per_layer": [round(s / d, 3) for s, d in zip(seconds, depth)]}
        print(json.dumps(summary))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    from tfmot_zip.io import atomic_write_text

    atomic_write_text(args.out, json.dumps({"rows": rows, **summary}, indent=1))
    print("| config | models | images/task | zip layers | forward s | zip s | zip / forward | forward CPU s | zip CPU s | zip / forward (CPU) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['config']} | error: {r['error'][-120:]!r} |")
            continue
        print(f"| {r['config']} | {r['models']} | {r['images_per_task']:,} | {r['zip_layers_per_model']} | "
              f"{r['forward_seconds']} | {r['zip_seconds']} | {r['zip_over_forward']} | {r['forward_cpu_seconds']} | "
              f"{r['zip_cpu_seconds']} | {r['zip_over_forward_cpu']} | {r['peak_rss_mb']:,} |")


if __name__ == "__main__":
    main()
