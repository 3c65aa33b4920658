"""``zip_models`` inside a ``tf.distribute`` strategy scope gives the zip one process gives.

Each run is a fresh process (a strategy's devices and cluster are fixed when TensorFlow starts):
tests/zipping/distributed_zip.py zips an MLP pair (default method, sharing 0.5) and a CNN pair
with BatchNorm (sharing 1.0, repair on, BatchNorm re-estimated layer by layer and at the end).
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "distributed_zip.py")


def _launch(tmp_path, mode, *args):
    out = str(tmp_path / f"{mode}{'_'.join(args)}.npz")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("TF_CONFIG", None)
    process = subprocess.Popen([sys.executable, SCRIPT, mode, out, *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, out


def _finish(process, out, timeout=600):
    try:
        log, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{process.args} did not finish in {timeout} s")
    assert process.returncode == 0, log[-3000:]
    return dict(np.load(out))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _finish(*_launch(tmp_path_factory.mktemp("single"), "single"))


def _assert_same_zip(result, reference):
    keys = sorted(k for k in reference if not k.endswith(("/distribute", "/variable_type")))
    assert keys == sorted(k for k in result if not k.endswith(("/distribute", "/variable_type")))
    pairs = [k for k in keys if k.endswith("/pairs")]
    assert len(pairs) >= 5  # every hidden layer of both pairs was zipped
    for key in keys:
        if key.endswith("/pairs"):
            assert json.loads(str(result[key])) == json.loads(str(reference[key])), key
        else:
            np.testing.assert_allclose(result[key], reference[key], rtol=1e-4, atol=2e-5, err_msg=key)


def test_mirrored_strategy_on_two_devices_gives_the_single_process_zip(tmp_path, single):
    result = _finish(*_launch(tmp_path, "mirrored"))
    _assert_same_zip(result, single)
    for case in ("mlp", "cnn_bn"):
        info = json.loads(str(result[f"{case}/distribute"]))
        assert info["strategy"] == "MirroredStrategy" and info["replicas"] == 2
        assert info["replicas_used"] == [0, 1]  # calibration batches ran on both devices
        assert str(result[f"{case}/variable_type"]) == "MirroredVariable"  # built in the scope, ready for fit


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [str(s.getsockname()[1]) for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_worker_processes_each_with_half_the_data_give_the_single_process_zip(tmp_path, single):
    ports = _free_ports(2)
    launched = [_launch(tmp_path, "worker", str(i), *ports) for i in range(2)]
    results = [_finish(*job) for job in launched]
    for result in results:
        _assert_same_zip(result, single)
        for case in ("mlp", "cnn_bn"):
            info = json.loads(str(result[f"{case}/distribute"]))
            assert info["strategy"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy") and info["workers"] == 2
            assert info["reductions"] > 0  # the sums went through the all-reduce
    assert json.loads(str(results[0]["mlp/distribute"]))["replicas_used"] == [0]
    assert json.loads(str(results[1]["mlp/distribute"]))["replicas_used"] == [1]


class _Extended:
    worker_devices = ("/job:worker/task:0/device:CPU:0",)


class _TwoWorkers:
    """Stands for a MultiWorkerMirroredStrategy of two workers with one device each."""

    extended = _Extended()
    num_replicas_in_sync = 2


def test_what_reads_every_task_in_one_process_is_refused_across_workers():
    from tfmot_zip.zipping.distribute import Replicas

    replicas = Replicas(_TwoWorkers())
    assert (replicas.local, replicas.workers) == (1, 2)
    with pytest.raises(ValueError, match=r"sharing=Budget\(\.\.\.\) is not available when zipping across 2 workers"):
        replicas.refuse_workers("sharing=Budget(...)", "Pass sharing as a fraction.")
    Replicas().refuse_workers("anything", "")  # one process: nothing refused


def test_other_strategies_zip_in_this_process_as_without_one():
    """A OneDeviceStrategy scope: nothing split or reduced, the same zip, no distribute record."""
    import tfmot_zip
    from builders import mlp
    from tfmot_zip.compat import tf

    models = [mlp(1, widths=(6, 4), input_shape=(5,)), mlp(2, widths=(6, 4), input_shape=(5,))]
    data = [np.random.default_rng(t).normal(size=(64, 5)).astype("float32") for t in range(2)]
    plain = tfmot_zip.zip_models(*models, calibration_data=data, sharing=0.5, progress=False)
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        scoped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=0.5, progress=False)
    assert "distribute" not in tfmot_zip.zip_summary(scoped).extra
    for a, b in zip(plain.get_weights(), scoped.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_conv_hessians_are_planned_on_every_workers_samples_together(monkeypatch):
    """Across workers the way a conv Hessian is computed (a sample, shifted products, the maps' Gram
    matrix) must be the same everywhere, or the all-reduced sums would not match: it is planned on
    the summed sample count. Two identical workers are simulated by sums that double."""
    import tfmot_zip
    from builders import calib, cnn
    from tfmot_zip.zipping import distribute, statistics

    planned = []
    plan = statistics.conv_hessian_plan

    def spy(samples, *args, **kwargs):
        planned.append(samples)
        return plan(samples, *args, **kwargs)

    monkeypatch.setattr(statistics, "conv_hessian_plan", spy)
    monkeypatch.setattr(distribute.Replicas, "sum_all", lambda self, arrays: [2.0 * np.asarray(a, np.float64) for a in arrays])
    rng = np.random.default_rng(0)
    data = (calib(rng, 30, (10, 10, 1)), calib(rng, 30, (10, 10, 1)))
    tfmot_zip.zip_models(cnn(1), cnn(2), calibration_data=data, sharing=0.5, method="mtz", progress=False)
    assert planned and set(planned) == {60}
