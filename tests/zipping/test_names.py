"""Task names are made valid once, up front; names that would merge are refused before any work."""
import numpy as np
import pytest

import tfmot_zip
from tfmot_zip.compat import keras

from builders import calib, mlp


@pytest.fixture
def data(rng):
    return calib(rng, 8, (6, 6, 1)), calib(rng, 8, (6, 6, 1))


@pytest.mark.parametrize("names", [["a-b", "a b"], ["x", "x"], ["t.1", "t 1"]])
def test_names_that_merge_are_refused_before_any_work(data, names, monkeypatch):
    import tfmot_zip.zipping.api as api

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the names were checked")

    monkeypatch.setattr(api, "trace_spaces", no_work)
    with pytest.raises(ValueError, match="both become"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=data, task_names=names)


def test_names_become_identifiers_and_keras_round_trips(data, tmp_path):
    zipped = tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=data, sharing=0.5,
                                  task_names=["shirts & shoes", "2nd task"])
    assert zipped.output_names == ["shirts___shoes", "t_2nd_task"]
    assert all(name.isidentifier() for name in zipped.output_names)
    path = tmp_path / "named.keras"
    zipped.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.output_names == zipped.output_names


def test_model_names_are_numbered_when_equal(data):
    a, b = mlp(1, name="same"), mlp(2, name="same")
    assert tfmot_zip.zip_models(a, b, calibration_data=data).output_names == ["same", "same_2"]


def test_task_name_making_a_copy_collide_with_a_layer_is_refused(data):
    with pytest.raises(ValueError, match="collide with layer names"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=data, task_names=["fc1", "b"])


def test_wrong_number_or_a_string_is_refused(data):
    with pytest.raises(ValueError, match="needs 2 names"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=data, task_names="ab")
