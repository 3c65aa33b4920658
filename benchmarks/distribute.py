"""Zipping under a ``tf.distribute`` strategy next to the same zip without one, in fresh processes.

A nested ``keras.applications`` MobileNetV2 pair (32x32x3, alpha 0.35, random weights; models
``net-1``/``net-2`` with a head ``head.v2``), 300 images per task given as ``tf.data`` sets in
batches of 37, sharing 0.5, the default method. Each run is its own process (a strategy's devices
are fixed when TensorFlow starts): ``single`` (no strategy) and ``mirrored`` (``MirroredStrategy``
over 2 logical CPUs). Prints each run's zip seconds, whether every layer's pairs are the same, and
the largest difference of the zipped models' outputs.

Run:  python -m benchmarks.distribute [--images 300]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _zip(mode: str, images: int, out: str) -> None:
    import numpy as np

    import tfmot_zip
    from tfmot_zip.compat import keras, tf

    strategy = None
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def make(seed: int, name: str):
        keras.utils.set_random_seed(seed)
        base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, include_top=False,
                                              pooling="avg")
        inp = keras.Input((32, 32, 3), name=f"img-{seed}")
        return keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="head.v2")(base(inp)), name=name)

    models = [make(1, "net-1"), make(2, "net-2")]
    rng = np.random.default_rng(0)
    xs = [rng.random((images, 32, 32, 3)).astype("float32") for _ in models]
    sets = [tf.data.Dataset.from_tensor_slices(x).batch(37) for x in xs]
    start = time.perf_counter()
    if strategy is None:
        zipped = tfmot_zip.zip_models(*models, calibration_data=sets, sharing=0.5, progress=False)
    else:
        with strategy.scope():
            zipped = tfmot_zip.zip_models(*models, calibration_data=sets, sharing=0.5, progress=False)
    seconds = time.perf_counter() - start
    pairs = {l.name: json.dumps(l.get_config()["zip_record"]["pairs"], default=list)
             for l in zipped.layers if "pairs" in (l.get_config().get("zip_record") or {})}
    outputs = [o.tolist() for o in zipped.predict(xs, verbose=0)]
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "pairs": pairs, "outputs": outputs}, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--run", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args()
    if args.run:
        _zip(args.run[0], args.images, args.run[1])
        return
    import numpy as np

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("single", "mirrored"):
            out = os.path.join(tmp, f"{mode}.json")
            subprocess.run([sys.executable, "-m", "benchmarks.distribute", "--images", str(args.images), "--run", mode, out],
                           check=True, stderr=subprocess.DEVNULL)
            with open(out) as f:
                results[mode] = json.load(f)
    single, mirrored = results["single"], results["mirrored"]
    same = sum(single["pairs"][k] == mirrored["pairs"].get(k) for k in single["pairs"])
    difference = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(single["outputs"], mirrored["outputs"]))
    print(f"single process: {single['seconds']:.1f} s; MirroredStrategy over 2 logical CPUs: {mirrored['seconds']:.1f} s "
          f"({mirrored['seconds'] / single['seconds']:.1f}x)")
    print(f"layers with the same pairs: {same} of {len(single['pairs'])}; largest output difference: {difference:.3g}")


if __name__ == "__main__":
    main()
