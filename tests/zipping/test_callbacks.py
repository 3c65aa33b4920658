"""ZipCallback: layer-wise zipping inside fit, accumulated Hessians, resume, distribution."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfmot_zip
import tfmot_zip.model.layers
import tfmot_zip.zipping.callbacks
from tfmot_zip import data, training
from tfmot_zip.compat import keras, tf
from tfmot_zip.core.hessian import HessianAccumulator, extract_patches

from builders import calib, cnn, mlp


def labelled(rng, n, shape, classes=3):
    return calib(rng, n, shape), rng.integers(0, classes, n)


def frozen_compile(model):
    names = list(model.output_names)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss={n: "sparse_categorical_crossentropy" for n in names})
    return model


def test_layerwise_zipping_inside_fit(rng):
    a, b = mlp(1), mlp(2)
    sets = [labelled(rng, 512, (6, 6, 1)), labelled(rng, 512, (6, 6, 1))]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=None, sharing=1.0,
                                  schedule=tfmot_zip.LayerwiseSchedule(calibration_steps=3, retrain_steps=4, growth=2.0))
    assert tfmot_zip.zipping.callbacks.pending_layers(zipped) == ["fc1", "fc2"]
    training.compile_multitask(zipped, 1e-3)
    callback = tfmot_zip.ZipCallback()
    zipped.fit(data.multitask(*sets, batch_size=32), steps_per_epoch=20, epochs=1, verbose=0, callbacks=[callback])
    # fc1 zipped after 3 accumulation steps, retrained 4, fc2 accumulated 3 more: zipped at step 10.
    assert [(e["layer"], e["step"]) for e in callback.log] == [("fc1", 3), ("fc2", 10)]
    assert tfmot_zip.zipping.callbacks.pending_layers(zipped) == []
    report = tfmot_zip.zip_summary(zipped)
    assert [l.shared_units for l in report.layers] == [16, 8, 0]
    plain = tfmot_zip.strip_zipping(zipped)
    xs = [calib(rng, 8, (6, 6, 1)), calib(rng, 8, (6, 6, 1))]
    for z, p in zip(zipped(xs), plain(xs)):
        np.testing.assert_allclose(z.numpy(), p.numpy(), atol=2e-6)


def test_forgotten_callback_fails_loudly(rng):
    zipped = tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=None, sharing=0.5,
                                  schedule=tfmot_zip.LayerwiseSchedule(2, 2))
    training.compile_multitask(zipped)
    sets = [labelled(rng, 64, (6, 6, 1)), labelled(rng, 64, (6, 6, 1))]
    with pytest.raises(tf.errors.InvalidArgumentError, match="no tfmot_zip.ZipCallback"):
        zipped.fit(data.multitask(*sets, batch_size=32), steps_per_epoch=1, verbose=0)


def test_one_shot_schedule_with_calibration_equals_zip_models(rng):
    a, b = mlp(3), mlp(4)
    cal = (calib(rng, 200, (6, 6, 1)), calib(rng, 150, (6, 6, 1)))
    now = tfmot_zip.zip_models(a, b, calibration_data=cal, sharing=0.5, method="mtz")
    later = tfmot_zip.zip_models(a, b, calibration_data=None, sharing=0.5, schedule=tfmot_zip.OneShotSchedule())
    frozen_compile(later)
    sets = [labelled(rng, 64, (6, 6, 1)), labelled(rng, 64, (6, 6, 1))]
    later.fit(data.multitask(*sets, batch_size=32), steps_per_epoch=1, verbose=0,
              callbacks=[tfmot_zip.ZipCallback(calibration_data=cal)])
    later = tfmot_zip.compact_zipped(later)  # zip_models compacts its result
    for name in ("fc1", "fc2", "head"):
        for t in range(2):
            np.testing.assert_array_equal(now.get_layer(name).get_maps(t)[1], later.get_layer(name).get_maps(t)[1])
            np.testing.assert_allclose(now.get_layer(name).get_task_weights(t)[0], later.get_layer(name).get_task_weights(t)[0], atol=1e-6)


@pytest.mark.parametrize("builder", [mlp, cnn])
def test_accumulated_hessian_equals_batches(rng, builder):
    a, b = builder(5), builder(6)
    shape = a.input_shape[1:]
    sets = [labelled(rng, 96, shape), labelled(rng, 96, shape)]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=None, sharing=1.0,
                                  schedule=tfmot_zip.LayerwiseSchedule(calibration_steps=10, retrain_steps=0))
    frozen_compile(zipped)
    ds = data.multitask(*sets, batch_size=32, shuffle=False, repeat=False)
    zipped.fit(ds, epochs=1, verbose=0, callbacks=[tfmot_zip.ZipCallback()])  # 3 steps < 10: still accumulating
    first = zipped.layers[[isinstance(l, (tfmot_zip.model.layers.ZipDense, tfmot_zip.model.layers.ZipConv2D)) for l in zipped.layers].index(True)]
    for t, (x, _) in enumerate(sets):
        acc = HessianAccumulator(first._task_input_dim(t))
        if isinstance(first, tfmot_zip.model.layers.ZipConv2D):
            acc.update(extract_patches(x, first.kernel_size, first.strides, first.padding, first.dilation_rate))
        else:
            acc.update(x.reshape(len(x), -1))
        np.testing.assert_allclose(first.hessian(t), acc.hessian(), rtol=1e-5, atol=1e-6)


def test_resume_from_saved_model_mid_schedule(rng, tmp_path):
    a, b = mlp(7), mlp(8)
    sets = [labelled(rng, 32 * 40, (6, 6, 1)), labelled(rng, 32 * 40, (6, 6, 1))]
    schedule = tfmot_zip.LayerwiseSchedule(calibration_steps=4, retrain_steps=3)

    def run(model, start, steps):
        ds = data.multitask(*sets, batch_size=32, shuffle=False, repeat=False).skip(start).take(steps)
        cb = tfmot_zip.ZipCallback()
        model.fit(ds, epochs=1, verbose=0, callbacks=[cb])
        return cb

    straight = frozen_compile(tfmot_zip.zip_models(a, b, calibration_data=None, sharing=1.0, schedule=schedule))
    log = run(straight, 0, 15).log
    assert [e["step"] for e in log] == [4, 11]
    halted = frozen_compile(tfmot_zip.zip_models(a, b, calibration_data=None, sharing=1.0, schedule=schedule))
    run(halted, 0, 9)  # fc1 zipped at 4, retrained 3, fc2 accumulating for 2 of 4 steps
    assert tfmot_zip.zipping.callbacks.pending_layers(halted) == ["fc1", "fc2"]
    path = tmp_path / "mid.keras"
    halted.save(path)
    resumed = keras.models.load_model(path)
    assert int(resumed.get_layer("fc2").zip_counter.numpy()) == 2
    log = run(resumed, 9, 6).log
    assert [(e["layer"], e["step"]) for e in log] == [("fc2", 2)]
    for name in ("fc1", "fc2", "head"):
        for t in range(2):
            np.testing.assert_array_equal(straight.get_layer(name).get_maps(t)[1], resumed.get_layer(name).get_maps(t)[1])
            np.testing.assert_allclose(straight.get_layer(name).get_task_weights(t)[0],
                                       resumed.get_layer(name).get_task_weights(t)[0], rtol=1e-5, atol=1e-6)


def test_schedule_arguments_validated():
    with pytest.raises(ValueError, match="calibration_steps=-1"):
        tfmot_zip.LayerwiseSchedule(calibration_steps=-1)
    with pytest.raises(ValueError, match="growth=0"):
        tfmot_zip.LayerwiseSchedule(growth=0)
    with pytest.raises(TypeError, match="schedule must be"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=None, schedule="layerwise")
    assert tfmot_zip.LayerwiseSchedule(1, 10, 2.0).total_retrain_steps(3) == 10 + 20 + 40


MIRRORED = textwrap.dedent('''
    import sys
    sys.path.insert(0, "tests")
    import numpy as np
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import tfmot_zip
    from tfmot_zip import data
    from tfmot_zip.compat import keras
    from builders import mlp

    rng = np.random.default_rng(0)
    sets = [(rng.random((512, 6, 6, 1)).astype("float32"), rng.integers(0, 3, 512)) for _ in range(2)]
    a, b = mlp(1), mlp(2)

    def make(strategy):
        with strategy.scope():
            z = tfmot_zip.zip_models(a, b, calibration_data=None, sharing=1.0,
                                     schedule=tfmot_zip.LayerwiseSchedule(calibration_steps=4, retrain_steps=2))
            z.compile(optimizer=keras.optimizers.SGD(0.0),
                      loss={n: "sparse_categorical_crossentropy" for n in z.output_names})
        return z

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    results = []
    for strategy in (mirrored, tf.distribute.get_strategy()):
        z = make(strategy)
        ds = data.multitask(*sets, batch_size=32, shuffle=False, repeat=False)
        z.fit(ds, epochs=1, verbose=0, callbacks=[tfmot_zip.ZipCallback()])
        results.append([z.get_layer(n).get_task_weights(1)[0] for n in ("fc1", "fc2")])
        assert tfmot_zip.zipping.callbacks.pending_layers(z) == []
    for w_mirrored, w_single in zip(*results):
        np.testing.assert_allclose(w_mirrored, w_single, rtol=1e-4, atol=1e-5)
    print("MIRRORED_OK")
''')


def test_mirrored_strategy_two_replicas_match_single_device():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", MIRRORED], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert "MIRRORED_OK" in out.stdout, out.stderr[-3000:]


def test_cosine_decay_and_soft_targets(rng):
    a, b = mlp(9), mlp(10)
    sets = [labelled(rng, 256, (6, 6, 1)), labelled(rng, 256, (6, 6, 1))]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(sets[0][0], sets[1][0]), sharing=1.0, method="mtz")
    training.compile_multitask(zipped, 1e-2, decay_steps=4)
    lr = zipped.optimizer.get_config()["learning_rate"]
    assert lr["class_name"] == "CosineDecay" and lr["config"]["decay_steps"] == 4
    assert lr["config"]["initial_learning_rate"] == pytest.approx(1e-2)
    soft = training.soft_targets([a, b], sets, label_weight=0.25)
    expected = 0.25 * np.eye(3)[sets[0][1]] + 0.75 * a.predict(sets[0][0], verbose=0)
    np.testing.assert_allclose(soft[0][1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(soft[1][1].sum(1), 1.0, rtol=1e-5)
    training.compile_multitask(zipped, 1e-3, soft=True)
    history = training.retrain(zipped, soft, steps=4, batch_size=32, eval_every=2, tests=[(s[0], s[1]) for s in sets])
    assert [step for step, _ in history] == [2, 4]
    with pytest.raises(ValueError, match="soft targets have 4"):
        training.retrain(zipped, [(sets[0][0], np.zeros((256, 4))), soft[1]], steps=1)


def test_callback_calibration_with_nan_is_refused_before_any_zipping(rng):
    a, b = mlp(3), mlp(4)
    bad = calib(rng, 50, (6, 6, 1))
    bad[3, 0, 0, 0] = np.nan
    bad[7, 1, 1, 0] = np.inf
    later = tfmot_zip.zip_models(a, b, calibration_data=None, sharing=0.5, schedule=tfmot_zip.OneShotSchedule())
    frozen_compile(later)
    sets = [labelled(rng, 64, (6, 6, 1)), labelled(rng, 64, (6, 6, 1))]
    with pytest.raises(ValueError, match=r"calibration_data\[1\].*1 NaN and 1 inf"):
        later.fit(data.multitask(*sets, batch_size=32), steps_per_epoch=1, verbose=0,
                  callbacks=[tfmot_zip.ZipCallback(calibration_data=(calib(rng, 50, (6, 6, 1)), bad))])
    assert tfmot_zip.zipping.callbacks.pending_layers(later)  # nothing was zipped
