"""Tests for tfmot_zip.data: tasks, the multi-task pipeline and as_inputs."""
from __future__ import annotations

import numpy as np
import pytest

from tfmot_zip import data
from tfmot_zip.data import fashion_mnist as datasets
from tfmot_zip.compat import keras, tf

pytestmark = pytest.mark.skipif(
    not (datasets.fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed: {datasets.INSTALL_COMMAND}",
)


def _originals(split):
    return datasets.load_fashion_mnist(split)


# ------------------------------------------------------------------------------------------ tasks


@pytest.mark.parametrize(
    "name, classes",
    [
        ("classes_0_4", (0, 1, 2, 3, 4)),
        ("classes_5_9", (5, 6, 7, 8, 9)),
        ("classes_0_2", (0, 1, 2)),
        ("classes_3_5", (3, 4, 5)),
        ("classes_6_9", (6, 7, 8, 9)),
    ],
)
def test_named_class_tasks_remap_labels_against_originals(name, classes):
    task = data.make_task(name)
    assert task.name == name and task.classes == classes and task.num_classes == len(classes)
    for split, x, y in (("train", task.x_train, task.y_train), ("test", task.x_test, task.y_test)):
        x_orig, y_orig = _originals(split)
        keep = np.isin(y_orig, classes)
        assert len(y) == keep.sum() == len(x)
        # Task label k is original class classes[k]; images kept in file order.
        np.testing.assert_array_equal(np.asarray(classes)[y], y_orig[keep])
        np.testing.assert_array_equal(x, x_orig[keep])
        assert y.dtype == np.int64 and y.min() == 0 and y.max() == len(classes) - 1


def test_all_task_is_the_whole_dataset():
    task = data.make_task("all")
    x, y = _originals("train")
    assert task.num_classes == 10 and task.classes == tuple(range(10))
    np.testing.assert_array_equal(task.y_train, y)
    assert task.x_train.shape == (60000, 28, 28, 1)


def test_all_transposed_really_transposes_every_image():
    task = data.make_task("all_transposed")
    x, y = _originals("test")
    np.testing.assert_array_equal(task.y_test, y)
    assert task.x_test.shape == x.shape
    for i in (0, 1, 1234, 9999):
        np.testing.assert_array_equal(task.x_test[i, :, :, 0], x[i, :, :, 0].T)
    # Fashion-MNIST images are not symmetric, so the domain really differs.
    assert not np.array_equal(task.x_test[:100], x[:100])
    assert task.x_train.shape == (60000, 28, 28, 1)


def test_make_class_task_order_defines_labels_and_default_name():
    task = data.make_class_task([7, 2])
    assert task.name == "classes_7_2"
    assert task.class_names == ("Sneaker", "Pullover")
    x, y = _originals("test")
    np.testing.assert_array_equal(task.y_test, np.where(y[np.isin(y, [7, 2])] == 7, 0, 1))
    flipped = data.make_class_task([1, 0], name="flip", transform=lambda im: im[:, ::-1])
    assert flipped.name == "flip"
    np.testing.assert_array_equal(flipped.x_test[0], x[y <= 1][0][::-1])


def test_tasks_are_cached_read_only_and_short_repr():
    task = data.make_task("classes_0_4")
    assert data.make_task("classes_0_4") is task
    with pytest.raises(ValueError):
        task.y_train[0] = 3
    assert "30000" in repr(task) and len(repr(task)) < 200


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError) as error:
        data.make_task("classes_0_9")
    message = str(error.value)
    assert "'classes_0_9'" in message
    for name in data.TASK_NAMES:
        assert name in message


@pytest.mark.parametrize(
    "classes, match",
    [([], "empty"), ([0, 10], r"outside 0\.\.9: \[10\]"), ([3, 3], "repeats"), (["a"], "integer labels")],
)
def test_make_class_task_rejects_bad_classes(classes, match):
    with pytest.raises(ValueError, match=match):
        data.make_class_task(classes)


# ------------------------------------------------------------------------------------- multitask


def _toy(n, num_classes, offset, shape=(4, 4, 1)):
    x = np.arange(n * np.prod(shape), dtype=np.float32).reshape((n,) + shape) + offset
    y = (np.arange(n) % num_classes).astype(np.int64)
    return x, y


def test_multitask_yields_one_batch_per_task_with_labels_in_range():
    a, b, c = data.make_task("classes_0_2"), data.make_task("classes_3_5"), data.make_task("classes_6_9")
    ds = data.multitask(a.train, b.train, c.train, batch_size=32)
    spec_x, spec_y = ds.element_spec
    assert len(spec_x) == 3 and len(spec_y) == 3
    for step, (xs, ys) in enumerate(ds.take(5)):
        for task, x, y in zip((a, b, c), xs, ys):
            assert tuple(x.shape) == (32, 28, 28, 1) and x.dtype == tf.float32
            assert tuple(y.shape) == (32,) and y.dtype == tf.int64
            assert 0 <= int(tf.reduce_min(y)) and int(tf.reduce_max(y)) < task.num_classes
    assert step == 4


def test_multitask_without_repeat_ends_with_shortest_and_shuffle_false_keeps_order():
    xa, ya = _toy(50, 3, 0.0)
    xb, yb = _toy(23, 2, 1000.0)
    batches = list(data.multitask((xa, ya), (xb, yb), batch_size=5, shuffle=False, repeat=False))
    assert len(batches) == 23 // 5
    (first_a, first_b), (label_a, label_b) = batches[0]
    np.testing.assert_array_equal(first_a.numpy(), xa[:5])
    np.testing.assert_array_equal(first_b.numpy(), xb[:5])
    np.testing.assert_array_equal(label_b.numpy(), yb[:5])


def test_multitask_repeats_forever_and_shuffles_each_task_independently():
    xa, ya = _toy(20, 4, 0.0)
    xb, yb = _toy(20, 4, 0.0)  # identical data: only the per-task seed differs
    ds = data.multitask((xa, ya), (xb, yb), batch_size=8, seed=3)
    batches = list(ds.take(12))  # 96 examples per task from 20: must repeat
    assert len(batches) == 12
    seen_a = np.concatenate([xs[0].numpy()[:, 0, 0, 0] for xs, _ in batches])
    seen_b = np.concatenate([xs[1].numpy()[:, 0, 0, 0] for xs, _ in batches])
    assert not np.array_equal(seen_a, seen_b)  # seeds seed+0 and seed+1
    assert set(seen_a[:16].tolist()) <= set(xa[:, 0, 0, 0].tolist())
    # First pass over task a covers all 20 examples exactly once (shuffle before repeat).
    assert sorted(seen_a[:16].tolist()) == sorted(set(seen_a[:16].tolist()))
    again = [xs[0].numpy() for xs, _ in data.multitask((xa, ya), (xb, yb), batch_size=8, seed=3).take(3)]
    np.testing.assert_array_equal(again[0], batches[0][0][0].numpy())


def test_multitask_accepts_unbatched_tf_datasets():
    xa, ya = _toy(40, 3, 0.0)
    ds_a = tf.data.Dataset.from_tensor_slices((xa, ya))
    ds = data.multitask(ds_a, (xa, ya), batch_size=16, repeat=False)
    (x1, x2), (y1, y2) = next(iter(ds))
    assert tuple(x1.shape) == (16, 4, 4, 1) and tuple(y2.shape) == (16,)
    assert len(list(ds)) == 2


def test_multitask_trains_a_two_input_two_output_model():
    xa, ya = _toy(64, 3, 0.0)
    xb, yb = _toy(64, 2, 0.0)
    in_a, in_b = keras.Input((4, 4, 1)), keras.Input((4, 4, 1))
    out_a = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(in_a))
    out_b = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(in_b))
    model = keras.Model([in_a, in_b], [out_a, out_b])
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(data.multitask((xa / 1000, ya), (xb / 1000, yb), batch_size=16), steps_per_epoch=3, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])


def test_multitask_errors():
    x, y = _toy(10, 2, 0.0)
    with pytest.raises(ValueError, match="at least one dataset"):
        data.multitask()
    with pytest.raises(ValueError, match="batch_size=0"):
        data.multitask((x, y), batch_size=0)
    with pytest.raises(ValueError, match="batch_size=2.5"):
        data.multitask((x, y), batch_size=2.5)
    with pytest.raises(ValueError, match=r"datasets\[1\]: x has 10 examples but y has 9"):
        data.multitask((x, y), (x, y[:9]), batch_size=2)
    with pytest.raises(ValueError, match=r"datasets\[0\] is empty"):
        data.multitask((x[:0], y[:0]), batch_size=2)
    with pytest.raises(ValueError, match="fewer than batch_size=32"):
        data.multitask((x, y), batch_size=32)
    with pytest.raises(TypeError, match=r"datasets\[0\] must be an \(x, y\) tuple"):
        data.multitask(x, batch_size=2)
    with pytest.raises(ValueError, match="unbatched"):
        data.multitask(tf.data.Dataset.from_tensor_slices(x), batch_size=2)


# ------------------------------------------------------------------------------------- as_inputs


def test_as_inputs_from_arrays_tuples_and_datasets():
    x, y = _toy(30, 3, 0.0)
    np.testing.assert_array_equal(data.as_inputs(x), x)
    np.testing.assert_array_equal(data.as_inputs((x, y), count=7), x[:7])
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    np.testing.assert_array_equal(data.as_inputs(unbatched, count=11), x[:11])
    np.testing.assert_array_equal(data.as_inputs(unbatched.batch(4), count=11), x[:11])
    np.testing.assert_array_equal(data.as_inputs(tf.data.Dataset.from_tensor_slices(x).batch(8)), x)
    # drop_remainder batches have a static first dimension: say so explicitly.
    fixed = tf.data.Dataset.from_tensor_slices(x).batch(8, drop_remainder=True)
    np.testing.assert_array_equal(data.as_inputs(fixed, batched=True), x[:24])
    # An infinite dataset is fine with a count.
    np.testing.assert_array_equal(data.as_inputs(unbatched.repeat(), count=45)[30:], x[:15])


def test_as_inputs_errors():
    x, y = _toy(5, 2, 0.0)
    with pytest.raises(ValueError, match="no examples"):
        data.as_inputs(x[:0])
    with pytest.raises(ValueError, match="dataset is empty"):
        data.as_inputs(tf.data.Dataset.from_tensor_slices((x, y)).take(0))
    with pytest.raises(ValueError, match="count=0"):
        data.as_inputs(x, count=0)
    with pytest.raises(ValueError, match="dataset of dicts"):
        data.as_inputs(tf.data.Dataset.from_tensor_slices({"image": x}))
