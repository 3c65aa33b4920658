"""Compact zip layers (``layout=...``): maps as constants, a kernel stored as blocks of the read cells.

Generated layers (hypothesis: Dense or Conv2D, 1-3 tasks, random maps and weights): a layer with a
frozen layout computes what the layer with weight maps computes, its gradients are the latter's on
the read cells, it stores exactly the read cells (brute force over every cell and task) and no
integer weights, and it survives get_config / from_config. Then the refusals, TFMOT pruning of the
blocks and QAT.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfmot_zip.compat import keras, tf
from tfmot_zip.model.layers import ZipConv2D, ZipDense


@st.composite
def layer_cases(draw):
    tasks = draw(st.integers(1, 3))
    conv = draw(st.booleans())
    in_cap, cap = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    n_in = [draw(st.integers(1, in_cap)) for _ in range(tasks)]
    n_out = [draw(st.integers(1, cap)) for _ in range(tasks)]
    in_maps = [draw(st.lists(st.integers(0, in_cap - 1), min_size=n, max_size=n)) for n in n_in]
    out_maps = [draw(st.lists(st.integers(0, cap - 1), min_size=n, max_size=n, unique=True)) for n in n_out]
    return dict(conv=conv, in_cap=in_cap, cap=cap, n_in=n_in, n_out=n_out, in_maps=in_maps, out_maps=out_maps,
                seed=draw(st.integers(0, 2**31 - 1)))


def make(case, layout):
    kwargs = dict(task_units=case["n_out"], task_input_units=case["n_in"], input_capacity=case["in_cap"],
                  capacity=case["cap"], activation="tanh", layout=layout)
    if case["conv"]:
        layer = ZipConv2D(kernel_size=2, padding="same", **kwargs)
        shapes = [(2, 3, 3, n) for n in case["n_in"]]
    else:
        layer = ZipDense(**kwargs)
        shapes = [(2, n) for n in case["n_in"]]
    rng = np.random.default_rng(case["seed"])
    xs = [tf.constant(rng.normal(size=s).astype("float32")) for s in shapes]
    layer(xs)
    return layer, xs


def read_mask(case):
    mask = np.zeros((case["in_cap"], case["cap"]), bool)
    for i, o in zip(case["in_maps"], case["out_maps"]):
        mask[np.ix_(i, o)] = True
    return mask


@settings(max_examples=40, deadline=None)
@given(layer_cases())
def test_a_frozen_layout_computes_trains_and_counts_what_it_should(case):
    plain, xs = make(case, None)
    for t, (i, o) in enumerate(zip(case["in_maps"], case["out_maps"])):
        plain.set_maps(t, in_map=np.array(i), out_map=np.array(o))
    frozen, _ = make(case, {"in_maps": case["in_maps"], "out_maps": case["out_maps"]})
    frozen.assign_physical_kernel(plain.kernel.numpy())
    frozen.bias.assign(plain.bias.numpy())
    for got, want in zip(frozen(xs), plain(xs)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    mask = read_mask(case)
    positions = 4 if case["conv"] else 1
    assert frozen.count_params() == positions * int(mask.sum()) + case["cap"]  # read cells and biases, no maps
    assert not any(w.dtype.is_integer for w in frozen.weights)
    np.testing.assert_array_equal(frozen.physical_kernel().numpy(), np.where(mask, plain.kernel.numpy(), 0))
    # gradients reach the blocks: the plain kernel's gradient on the read cells (zero elsewhere)
    with tf.GradientTape(persistent=True) as tape:
        loss_plain = sum(tf.reduce_sum(o ** 2) for o in plain(xs))
        loss_frozen = sum(tf.reduce_sum(o ** 2) for o in frozen(xs))
    grad_plain = tf.convert_to_tensor(tape.gradient(loss_plain, plain.kernel)).numpy()
    np.testing.assert_array_equal(grad_plain[..., ~mask], 0)
    grads = tape.gradient(loss_frozen, frozen.kernel_variables())
    recovered = frozen._blocks.join(_with_empty(frozen, [tf.convert_to_tensor(g).numpy() for g in grads]))
    np.testing.assert_allclose(recovered, grad_plain, rtol=1e-4, atol=1e-5)
    # the layout survives the config
    clone = type(frozen).from_config(frozen.get_config())
    clone(xs)
    clone.set_weights(frozen.get_weights())
    for got, want in zip(clone(xs), frozen(xs)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def _with_empty(layer, grads):
    """Block gradients with zero blocks for the row groups no task's column reads."""
    out, it = [], iter(grads)
    for rows, columns in zip(layer._blocks.rows, layer._blocks.columns):
        out.append(next(it) if len(columns) else np.zeros(layer._prefix + (len(rows), 0), np.float32))
    return out


def test_a_frozen_layer_refuses_new_maps_and_bad_layouts():
    layer = ZipDense([2, 2], [2, 2], 3, capacity=3, layout={"in_maps": [[0, 1], [0, 2]], "out_maps": [[0, 1], [0, 2]]})
    layer([tf.zeros((1, 2)), tf.zeros((1, 2))])
    with pytest.raises(ValueError, match="froze its maps.*zip_models"):
        layer.set_maps(0, out_map=np.array([1, 0]))
    with pytest.raises(ValueError, match=r"layout\['out_maps'\]\[1\] must be 2 integers in \[0, 3\)"):
        ZipDense([2, 2], [2, 2], 3, capacity=3, layout={"in_maps": [[0, 1], [0, 2]], "out_maps": [[0, 1], [0, 3]]})
    with pytest.raises(ValueError, match="one map per task"):
        ZipDense([2, 2], [2, 2], 3, capacity=3, layout={"in_maps": [[0, 1]], "out_maps": [[0, 1], [0, 2]]})
    with pytest.raises(ValueError, match="keys 'in_maps' and 'out_maps'"):
        ZipDense([2], [2], 2, layout={"maps": [[0, 1]]})


def test_pruning_and_qat_reach_the_blocks_of_a_compact_model():
    import tensorflow_model_optimization as tfmot

    import tfmot_zip
    from tfmot_zip.apps.zoo import example_pair
    from tfmot_zip.export.tfmot import register_with_tfmot

    register_with_tfmot()
    model_a, model_b, (x_a, x_b) = example_pair()
    zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5, progress=False)
    frozen = [l for l in zipped.layers if getattr(l, "kernel_blocks", None)]
    assert frozen and any(len(l.kernel_blocks) > 1 for l in frozen)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(zipped, pruning_schedule=schedule)
    pruned.compile(optimizer="sgd", loss=["sparse_categorical_crossentropy"] * 2)
    y = [np.zeros(len(x_a), np.int64), np.zeros(len(x_b), np.int64)]
    pruned.fit([x_a, x_b], y, epochs=1, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    for layer in stripped.layers:
        for block in getattr(layer, "kernel_blocks", None) or []:
            values = block.numpy()
            if values.size >= 4:  # each block pruned to the target on its own
                assert abs(float(np.mean(values == 0)) - 0.5) <= 0.5 / values.size + 1e-9, (layer.name, values.size)
    quantized = tfmot_zip.quantize_zipped(zipped)
    for wrapper in quantized.layers:  # one weight quantizer per block
        inner = getattr(wrapper, "layer", None)
        if getattr(inner, "kernel_blocks", None):
            assert [w.name for w, _, _ in wrapper._weight_vars] == [b.name for b in inner.kernel_blocks]
    outs = quantized([x_a, x_b], training=False)
    for q, r in zip(outs, zipped([x_a, x_b])):
        assert q.shape == r.shape and np.isfinite(q.numpy()).all()
