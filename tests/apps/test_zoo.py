"""Tests for tfmot_zip.apps.zoo: architectures (closed-form parameter counts) and cached training."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tfmot_zip.data import fashion_mnist as datasets
from tfmot_zip.apps import zoo
from tfmot_zip.compat import keras


def dense(n_in, n_out):
    return n_in * n_out + n_out


def conv(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


@pytest.mark.parametrize("num_classes", [10, 5])
def test_lenet_300_100_parameter_count_and_layers(num_classes):
    model = zoo.lenet_300_100(num_classes)
    expected = dense(784, 300) + dense(300, 100) + dense(100, num_classes)
    assert model.count_params() == expected
    if num_classes == 10:
        assert expected == 266_610
    assert [layer.name for layer in model.layers] == ["flatten", "fc1", "fc2", "head"]
    assert model.output_shape == (None, num_classes)
    assert model.get_layer("head").activation is keras.activations.softmax


def test_lenet5_parameter_count_and_shapes():
    model = zoo.lenet5()
    # conv1 same: 28x28x6 -> pool 14x14 -> conv2 valid 10x10x16 -> pool 5x5x16 = 400 features.
    expected = conv(5, 1, 6) + conv(5, 6, 16) + dense(400, 120) + dense(120, 84) + dense(84, 10)
    assert model.count_params() == expected == 61_706
    assert model.get_layer("conv1").output_shape == (None, 28, 28, 6)
    assert model.get_layer("conv2").output_shape == (None, 10, 10, 16)
    assert model.get_layer("flatten").output_shape == (None, 400)


@pytest.mark.parametrize("num_classes", [10, 5])
def test_lenet5_caffe_parameter_count_and_layers(num_classes):
    model = zoo.lenet5_caffe(num_classes)
    # conv1 valid: 24x24x20 -> pool 12x12 -> conv2 valid 8x8x50 -> pool 4x4x50 = 800 features.
    expected = conv(5, 1, 20) + conv(5, 20, 50) + dense(800, 500) + dense(500, num_classes)
    assert model.count_params() == expected
    if num_classes == 10:
        assert expected == 431_080  # the Caffe/Han et al. LeNet-5
    assert [layer.name for layer in model.layers] == ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "head"]
    assert model.get_layer("conv1").output_shape == (None, 24, 24, 20)
    assert model.get_layer("conv2").output_shape == (None, 8, 8, 50)
    assert model.get_layer("flatten").output_shape == (None, 800)
    for name in ("conv1", "conv2", "fc1"):
        assert model.get_layer(name).activation is keras.activations.relu
    assert model.get_layer("head").activation is keras.activations.softmax
    assert model.output_shape == (None, num_classes)
    assert zoo.build_model("lenet5_caffe", num_classes).count_params() == expected
    assert zoo.DEFAULT_EPOCHS["lenet5_caffe"] == 10
    assert zoo.lenet5_caffe(input_shape=(16, 16, 3)).get_layer("flatten").output_shape == (None, 50)
    with pytest.raises(ValueError, match="at least 16x16"):
        zoo.lenet5_caffe(input_shape=(15, 15, 1))


def test_small_vgg_parameter_count_and_conv_bn_relu_order():
    model = zoo.small_vgg(num_classes=4)
    expected = (
        conv(3, 1, 32) + bn(32) + conv(3, 32, 32) + bn(32)
        + conv(3, 32, 64) + bn(64) + conv(3, 64, 64) + bn(64)
        + dense(7 * 7 * 64, 128) + dense(128, 4)
    )
    assert model.count_params() == expected
    names = [layer.name for layer in model.layers]
    assert names[:7] == ["conv1_1", "bn1_1", "relu1_1", "conv1_2", "bn1_2", "relu1_2", "pool1"]
    assert model.get_layer("conv1_1").use_bias and model.get_layer("conv1_1").activation is keras.activations.linear


def test_resnet20_parameter_count_and_structure():
    model = zoo.resnet20()

    def block(c_in, c_out):
        params = conv(3, c_in, c_out, bias=False) + bn(c_out) + conv(3, c_out, c_out, bias=False) + bn(c_out)
        if c_in != c_out:
            params += conv(1, c_in, c_out, bias=False) + bn(c_out)
        return params

    expected = conv(3, 1, 16, bias=False) + bn(16) + dense(64, 10)
    for c_in, c_out in ((16, 16), (16, 32), (32, 64)):
        expected += block(c_in, c_out) + 2 * block(c_out, c_out)
    assert model.count_params() == expected == 273_754  # ~0.27M, as in He et al.
    assert model.get_layer("pad").output_shape == (None, 32, 32, 1)
    assert model.get_layer("stage3_block3_out").output_shape == (None, 8, 8, 64)
    assert model.get_layer("stage2_block1_proj_conv").strides == (2, 2)
    with pytest.raises(ValueError):
        model.get_layer("stage1_block1_proj_conv")  # identity shortcut where shapes match
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 1 + 18 + 2 and not any(layer.use_bias for layer in convs)
    assert "pad" not in [layer.name for layer in zoo.resnet20(input_shape=(32, 32, 3)).layers]


def test_builders_validate_arguments():
    with pytest.raises(ValueError, match="num_classes=0"):
        zoo.lenet_300_100(num_classes=0)
    with pytest.raises(ValueError, match=r"input_shape=\(28, 28\)"):
        zoo.lenet5(input_shape=(28, 28))
    with pytest.raises(ValueError) as error:
        zoo.build_model("vgg16")
    assert "'vgg16'" in str(error.value)
    for arch in zoo.ARCHITECTURES:
        assert arch in str(error.value)


needs_data = pytest.mark.skipif(
    not (datasets.fashion_mnist_dir() / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed: {datasets.INSTALL_COMMAND}",
)


@needs_data
def test_train_on_task_trains_caches_and_reloads_without_training(tmp_path, monkeypatch):
    first = zoo.train_on_task(
        "lenet_300_100", "classes_0_4", seed=1, epochs=2, max_train_samples=1000, cache_dir=tmp_path
    )
    assert first.model.name == "lenet_300_100_classes_0_4_s1"
    assert first.model.output_shape == (None, 5)
    assert first.train_steps == 2 * 8  # ceil(1000 / 128) = 8 batches per epoch
    assert 50 < first.test_accuracy <= 100  # percent; chance is 20
    assert first.path.is_file() and first.path.parent == tmp_path
    info = json.loads(first.path.with_suffix(".json").read_text())
    assert info["train_steps"] == 16 and info["epochs"] == 2 and info["seed"] == 1
    assert info["test_accuracy_percent"] == pytest.approx(first.test_accuracy)
    assert {"tensorflow", "tf_keras", "numpy"} <= set(info["versions"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, first.path.with_suffix(".json").name])

    def no_training(*args, **kwargs):
        raise AssertionError("train_on_task trained again instead of loading the cache")

    monkeypatch.setattr(keras.Model, "fit", no_training)
    second = zoo.train_on_task(
        "lenet_300_100", "classes_0_4", seed=1, epochs=2, max_train_samples=1000, cache_dir=tmp_path
    )
    assert second.path == first.path
    assert second.train_steps == first.train_steps and second.test_accuracy == first.test_accuracy
    assert second.model.optimizer is not None  # recompiled
    x = second.task.x_test[:64]
    np.testing.assert_allclose(second.model.predict(x, verbose=0), first.model.predict(x, verbose=0), atol=1e-6)
    _, accuracy = second.model.evaluate(second.task.x_test, second.task.y_test, verbose=0)
    assert 100 * accuracy == pytest.approx(first.test_accuracy, abs=1e-4)

    # Another seed is another cache entry, so it must train (and hit the patched fit).
    with pytest.raises(AssertionError, match="trained again"):
        zoo.train_on_task("lenet_300_100", "classes_0_4", seed=2, epochs=2, max_train_samples=1000, cache_dir=tmp_path)


@needs_data
def test_train_on_task_argument_errors(tmp_path):
    known = "Known architectures: lenet_300_100, lenet5, lenet5_caffe, small_vgg, resnet20"
    with pytest.raises(ValueError, match=known):
        zoo.train_on_task("alexnet", "all", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown task name"):
        zoo.train_on_task("lenet5", "cats", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="epochs=0"):
        zoo.train_on_task("lenet5", "all", epochs=0, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="task must be a task name"):
        zoo.train_on_task("lenet5", 3, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
