"""Runs one zip for tests/zipping/test_distribute.py in a fresh process (a strategy's devices and
cluster must be set before TensorFlow starts) and writes what the zip chose to a .npz file.

    python distributed_zip.py single OUT            # no strategy, all the data
    python distributed_zip.py mirrored OUT          # MirroredStrategy over 2 logical CPUs, all the data
    python distributed_zip.py worker OUT I PORT0 PORT1   # MultiWorkerMirroredStrategy worker I, its half
"""
import json
import os
import sys


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "worker":
        index, ports = int(sys.argv[3]), sys.argv[4:6]
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index},
        })

    import numpy as np

    import tfmot_zip
    from tfmot_zip.compat import tf

    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif mode == "worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = None

    from builders import cnn, mlp

    SAMPLES = 1000  # per task; a worker gets half: multiples of the BatchNorm estimate's batches of 250


    def data(seed, shape):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(SAMPLES, *shape)).astype("float32") + rng.random(shape).astype("float32")
        if mode == "worker":  # this worker's shard
            x = np.array_split(x, 2)[index]
        return x


    def plain(value):
        """A layer record's value without Keras' tracking wrappers (for json)."""
        if hasattr(value, "items"):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value


    cases = {
        "mlp": ([mlp(1, widths=(12, 8), input_shape=(5,)), mlp(2, widths=(12, 8), input_shape=(5,))], (5,),
                dict(sharing=0.5)),
        "cnn_bn": ([cnn(3, bn=True), cnn(4, bn=True)], (10, 10, 1), dict(sharing=1.0, repair=True)),
    }
    results = {}
    for name, (models, shape, options) in cases.items():
        calibration = [data(10 + t, shape) for t in range(2)]
        if strategy is None:
            zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, progress=False, **options)
        else:
            with strategy.scope():
                zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, progress=False, **options)
        for layer in zipped.layers:
            record = layer.get_config().get("zip_record")
            if record and "pairs" in record:
                results[f"{name}/{layer.name}/pairs"] = np.asarray(json.dumps(plain(record["pairs"])))
            for weight in layer.weights:
                results[f"{name}/{layer.name}/{weight.name}"] = weight.numpy()
        distribute = tfmot_zip.zip_summary(zipped).extra.get("distribute")  # the public report of what ran
        if distribute is not None:
            results[f"{name}/distribute"] = np.asarray(json.dumps(plain(distribute)))
        # every trainable variable, the zip layers' compact ones (made when zip_models compacts in place) included
        results[f"{name}/variable_type"] = np.asarray(",".join(sorted({type(w).__name__ for w in zipped.trainable_weights})))
    np.savez(out, **results)


if __name__ == "__main__":
    main()
