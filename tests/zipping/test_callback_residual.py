"""ZipCallback on a residual network (issue 16): scheduled zipping without retraining equals
one-shot zipping layer for layer, and a run saved and resumed anywhere ends where an
uninterrupted run ends."""
import numpy as np
import pytest

import tfmot_zip
from tfmot_zip import data
from tfmot_zip.compat import keras
from tfmot_zip.model.layers import zip_layers

from builders import calib, tiny_resnet

SHAPE = (8, 8, 1)
SHARING = 0.5


def frozen_compile(model):
    """No retraining: SGD with learning rate 0, and BatchNorm frozen (fit would move its statistics)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss={n: "sparse_categorical_crossentropy" for n in model.output_names})
    return model


@pytest.fixture(scope="module")
def setting():
    rng = np.random.default_rng(3)
    models = (tiny_resnet(1), tiny_resnet(2))
    cal = tuple(calib(rng, 64, SHAPE) for _ in models)
    sets = [(calib(rng, 64, SHAPE), rng.integers(0, 3, 64)) for _ in models]
    return models, cal, sets


def scheduled(models, cal=None):
    schedule = tfmot_zip.LayerwiseSchedule(calibration_steps=1, retrain_steps=1)
    return frozen_compile(tfmot_zip.zip_models(*models, calibration_data=None, sharing=SHARING, schedule=schedule,
                                               recalibrate_batchnorm=False))


def fit_steps(model, sets, cal, steps):
    ds = data.multitask(*sets, batch_size=16, shuffle=False).take(steps)
    callback = tfmot_zip.ZipCallback(calibration_data=cal)
    model.fit(ds, epochs=1, verbose=0, callbacks=[callback])
    return callback


def assert_same_zip(expected, actual, atol=1e-5):
    for want, got in zip(zip_layers(expected), zip_layers(actual)):
        assert want.name == got.name
        for t in range(len(expected.outputs)):
            for m_want, m_got in zip(want.get_maps(t), got.get_maps(t)):
                np.testing.assert_array_equal(m_want, m_got, err_msg=f"{want.name} task {t} maps")
            for w_want, w_got in zip(want.get_task_weights(t), got.get_task_weights(t)):
                if w_want is not None:
                    np.testing.assert_allclose(w_want, w_got, atol=atol, err_msg=f"{want.name} task {t} weights")
        pairs_want = [p[1:] for p in (want.zip_record or {}).get("pairs", [])]
        pairs_got = [p[1:] for p in (got.zip_record or {}).get("pairs", [])]
        assert pairs_want == pairs_got, want.name
    for want, got in zip(tfmot_zip.zip_summary(expected).layers, tfmot_zip.zip_summary(actual).layers):
        assert want.shared_units == got.shared_units


def test_scheduled_zipping_without_retraining_equals_one_shot(setting):
    models, cal, sets = setting
    one_shot = tfmot_zip.zip_models(*models, calibration_data=cal, sharing=SHARING, recalibrate_batchnorm=False, method="mtz")
    model = scheduled(models, cal)
    fit_steps(model, sets, cal, 20)
    assert tfmot_zip.zipping.callbacks.pending_layers(model) == []
    assert_same_zip(one_shot, tfmot_zip.compact_zipped(model))  # zip_models compacts its result


def test_resume_at_every_step_equals_uninterrupted_run(setting, tmp_path):
    models, cal, sets = setting
    straight = scheduled(models, cal)
    fit_steps(straight, sets, cal, 20)
    model = scheduled(models, cal)
    for step in range(12):  # 5 hidden layers, one stage each: every boundary and every stream midpoint
        fit_steps(model, sets, cal, 1)
        path = tmp_path / f"step{step}.keras"
        model.save(path)
        model = frozen_compile(keras.models.load_model(path))
    assert tfmot_zip.zipping.callbacks.pending_layers(model) == []
    assert_same_zip(straight, model)
