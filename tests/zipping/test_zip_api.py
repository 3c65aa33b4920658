"""zip_models / strip_zipping / zip_summary on small models: exactness, sharing, errors."""
import numpy as np
import pytest

import tfmot_zip
import tfmot_zip.model.layers
import tfmot_zip.zipping.callbacks
from tfmot_zip.compat import keras, tf
from tfmot_zip.core import MergeSide, apply_merge, invert_hessian, merge_cost_matrix, select_pairs
from tfmot_zip.core.hessian import HessianAccumulator

from builders import calib, cnn, mlp


def weights_of(model):
    return [w.numpy().copy() for w in model.weights]


def predict(model, xs):
    out = model(xs if len(model.inputs) > 1 else xs[0], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


@pytest.mark.parametrize("builder", [mlp, cnn])
@pytest.mark.parametrize("sharing", [0.5, 1.0])
def test_inputs_untouched_and_strip_is_equivalent(rng, builder, sharing):
    a, b = builder(1), builder(2)
    before_a, before_b = weights_of(a), weights_of(b)
    shape = a.input_shape[1:]
    xa, xb = calib(rng, 300, shape), calib(rng, 200, shape)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(xa, xb), sharing=sharing, method="mtz")
    for w0, w1 in zip(before_a + before_b, weights_of(a) + weights_of(b)):
        np.testing.assert_array_equal(w0, w1)
    assert zipped.output_names == [a.name, b.name]
    assert [t.name.split(":")[0] for t in zipped.inputs] == [f"{a.name}_input", f"{b.name}_input"]
    plain = tfmot_zip.strip_zipping(zipped)
    assert not any(isinstance(l, (tfmot_zip.model.layers.ZipDense, tfmot_zip.model.layers.ZipConv2D)) for l in plain.layers)
    xs = [calib(rng, 32, shape), calib(rng, 32, shape)]
    for z, p in zip(predict(zipped, xs), predict(plain, xs)):
        np.testing.assert_allclose(z, p, atol=2e-6)
    assert plain.count_params() == tfmot_zip.zip_summary(zipped).params_zipped


@pytest.mark.parametrize("builder", [mlp, lambda s: cnn(s, bn=True)])
def test_sharing_zero_reproduces_originals_exactly(rng, builder):
    a, b = builder(3), builder(4)
    shape = a.input_shape[1:]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(calib(rng, 50, shape), calib(rng, 50, shape)), sharing=0.0, method="mtz")
    xs = [calib(rng, 16, shape), calib(rng, 16, shape)]
    za, zb = predict(zipped, xs)
    np.testing.assert_allclose(za, a(xs[0]).numpy(), atol=1e-6)
    np.testing.assert_allclose(zb, b(xs[1]).numpy(), atol=1e-6)
    report = tfmot_zip.zip_summary(zipped)
    assert report.params_zipped == report.params_original == a.count_params() + b.count_params()


def test_first_layer_update_matches_core_on_directly_computed_hessians(rng):
    a, b = mlp(5), mlp(6)
    xa, xb = calib(rng, 400, (6, 6, 1)), calib(rng, 300, (6, 6, 1))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(xa, xb), sharing={"fc1": 0.5}, selection="hungarian", damping=1e-3, method="mtz")
    sides = []
    for model, x in ((a, xa), (b, xb)):
        acc = HessianAccumulator(36)
        acc.update(x.reshape(len(x), -1))
        kernel, bias = model.get_layer("fc1").get_weights()
        rows = np.hstack([kernel.T, bias[:, None]]).astype(np.float64)
        sides.append(MergeSide.from_hessian_inverse(rows, invert_hessian(acc.hessian(), 1e-3), np.arange(37)))
    rows, cols = select_pairs(merge_cost_matrix(*sides), 8, "hungarian")
    new_a, new_b = apply_merge(*sides, rows, cols)
    layer = zipped.get_layer("fc1")
    for t, expected in enumerate((new_a, new_b)):
        kernel, bias = layer.get_task_weights(t)
        np.testing.assert_allclose(kernel, expected[:, :-1].T, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bias, expected[:, -1], rtol=1e-5, atol=1e-6)
    # The chosen B neurons now read the same physical columns as their A partners.
    _, map_a = layer.get_maps(0)
    _, map_b = layer.get_maps(1)
    np.testing.assert_array_equal(map_b[cols], map_a[rows])
    assert len(np.intersect1d(map_a, map_b)) == 8


def direct_side(rows, hessian, shared, damping):
    return MergeSide.from_hessian_inverse(rows, invert_hessian(hessian, damping), shared)


def rows_of(kernel, bias):
    return np.hstack([kernel.T, bias[:, None]]).astype(np.float64)


def test_second_layer_shares_only_shared_inputs(rng):
    a, b = mlp(7), mlp(8)
    x = calib(rng, 200, (6, 6, 1))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=0.5, damping=1e-3, method="mtz")
    fc1, fc2 = zipped.get_layer("fc1"), zipped.get_layer("fc2")
    in_a, out_a = fc2.get_maps(0)
    in_b, out_b = fc2.get_maps(1)
    np.testing.assert_array_equal(in_a, fc1.get_maps(0)[1])
    np.testing.assert_array_equal(in_b, fc1.get_maps(1)[1])
    shared_rows = np.intersect1d(in_a, in_b)
    shared_cols = np.intersect1d(out_a, out_b)
    assert len(shared_rows) == 8 and len(shared_cols) == 4
    # The constrained update computed directly: fc2's Hessians on fc1's (zipped) outputs, the
    # original fc2 weights, the pairs read from the maps.
    features = keras.Model(zipped.inputs, list(fc2.input))([x, x])
    sides = []
    for model, inputs, feature in ((a, in_a, features[0]), (b, in_b, features[1])):
        acc = HessianAccumulator(16)
        acc.update(np.asarray(feature, np.float64))
        shared = np.append([list(inputs).index(r) for r in shared_rows], 16)
        sides.append(direct_side(rows_of(*model.get_layer("fc2").get_weights()), acc.hessian(), shared, 1e-3))
    pair_a = np.asarray([list(out_a).index(c) for c in shared_cols])
    pair_b = np.asarray([list(out_b).index(c) for c in shared_cols])
    new_a, new_b = apply_merge(*sides, pair_a, pair_b)
    for t, expected in enumerate((new_a, new_b)):
        kernel, bias = fc2.get_task_weights(t)
        np.testing.assert_allclose(kernel, expected[:, :-1].T, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bias, expected[:, -1], rtol=1e-4, atol=1e-5)
    # Shared cells agree; the update moved them away from both originals.
    ra = [list(in_a).index(r) for r in shared_rows]
    rb = [list(in_b).index(r) for r in shared_rows]
    np.testing.assert_allclose(new_a[np.ix_(pair_a, ra)], new_b[np.ix_(pair_b, rb)], atol=1e-6)
    assert not np.allclose(new_a[pair_a, :-1], rows_of(*a.get_layer("fc2").get_weights())[pair_a, :-1], atol=1e-3)


def test_summary_counts_closed_form(rng):
    a, b = mlp(9, widths=(16, 8)), mlp(10, widths=(16, 8))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(calib(rng, 100, (6, 6, 1)),) * 2, sharing=0.5, method="mtz")
    report = tfmot_zip.zip_summary(zipped)
    fc1, fc2, head = report.layers
    assert (fc1.shared_units, fc2.shared_units, head.shared_units) == (8, 4, 0)
    # fc1: 8 shared units read 36 shared inputs once; 2 x 8 specific units.
    assert fc1.params_after == 8 * 37 + 2 * 8 * 37
    # fc2: shared units: 8 shared inputs once + 8 specific inputs per task; plus the bias once.
    assert fc2.params_after == 4 * (8 + 2 * 8 + 1) + 2 * 4 * 17
    assert head.params_after == 2 * (8 * 3 + 3)
    assert report.params_original == 2 * a.count_params()
    assert "fc1" in str(report) and "total parameters" in str(report)


def test_single_input_strip_computes_shared_units_once(rng):
    a, b = mlp(11), mlp(12)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(calib(rng, 100, (6, 6, 1)),) * 2, sharing=1.0, single_input=True, method="mtz")
    assert len(zipped.inputs) == 1
    plain = tfmot_zip.strip_zipping(zipped)
    x = calib(rng, 8, (6, 6, 1))
    for z, p in zip(zipped(x), plain(x)):
        np.testing.assert_allclose(z.numpy(), p.numpy(), atol=2e-6)
    fc1_blocks = [l for l in plain.layers if l.name.startswith("fc1_") and isinstance(l, keras.layers.Dense)]
    assert len(fc1_blocks) == 1 and len(fc1_blocks[0].inbound_nodes) == 1  # one call serves both tasks


def test_save_load_roundtrip(rng, tmp_path):
    a, b = cnn(13), cnn(14)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(calib(rng, 64, (10, 10, 1)),) * 2, sharing=0.5, method="mtz")
    path = tmp_path / "zipped.keras"
    zipped.save(path)
    loaded = keras.models.load_model(path)
    xs = [calib(rng, 4, (10, 10, 1)), calib(rng, 4, (10, 10, 1))]
    for z, l in zip(predict(zipped, xs), predict(loaded, xs)):
        np.testing.assert_array_equal(z, l)
    assert str(tfmot_zip.zip_summary(loaded)) == str(tfmot_zip.zip_summary(zipped))
    for w, v in zip(zipped.weights, loaded.weights):
        np.testing.assert_array_equal(w.numpy(), v.numpy())
    for layer in zipped.layers:
        if isinstance(layer, (tfmot_zip.model.layers.ZipDense, tfmot_zip.model.layers.ZipConv2D)):
            clone = type(layer).from_config(layer.get_config())
            assert clone.get_config() == layer.get_config()


def test_hungarian_total_cost_not_above_greedy(rng):
    a, b = mlp(15), mlp(16)
    data = (calib(rng, 200, (6, 6, 1)), calib(rng, 200, (6, 6, 1)))
    g = tfmot_zip.zip_models(a, b, calibration_data=data, sharing={"fc1": 1.0}, selection="greedy", method="mtz")
    h = tfmot_zip.zip_models(a, b, calibration_data=data, sharing={"fc1": 1.0}, selection="hungarian", method="mtz")
    assert g.get_layer("fc1").zip_record["merge_cost"] >= h.get_layer("fc1").zip_record["merge_cost"] - 1e-9


def test_same_seed_same_result(rng):
    a, b = mlp(17), mlp(18)
    data = (calib(rng, 100, (6, 6, 1)), calib(rng, 100, (6, 6, 1)))
    z1 = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=0.5, method="random", seed=3)
    z2 = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=0.5, method="random", seed=3)
    for w1, w2 in zip(z1.weights, z2.weights):
        np.testing.assert_array_equal(w1.numpy(), w2.numpy())


@pytest.mark.parametrize("merged_hessian", ["sum_of_inverses", "exact"])
def test_three_models(rng, merged_hessian):
    models = [mlp(20), mlp(21), mlp(22, widths=(12, 8))]
    data = tuple(calib(rng, 120, (6, 6, 1)) for _ in models)
    zero = tfmot_zip.zip_models(*models, calibration_data=data, sharing=0.0, method="mtz")
    xs = [calib(rng, 8, (6, 6, 1)) for _ in models]
    for out, model, x in zip(predict(zero, xs), models, xs):
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-6)
    full = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, merged_hessian=merged_hessian, method="mtz")
    report = tfmot_zip.zip_summary(full)
    fc1 = report.layers[0]
    # 16 + 16 + 12 units zip into 16 physical units: all 12 of the third model are shared.
    assert sorted(len(t) for t in full.get_layer("fc1").unit_tasks().values()) == [2] * 4 + [3] * 12
    assert fc1.params_after == 16 * 37
    plain = tfmot_zip.strip_zipping(full)
    for z, p in zip(predict(full, xs), predict(plain, xs)):
        np.testing.assert_allclose(z, p, atol=2e-6)
    assert plain.count_params() == report.params_zipped


@pytest.mark.parametrize("merged_hessian", ["sum_of_inverses", "exact"])
def test_merged_hessian_matches_a_direct_computation(rng, merged_hessian):
    """Third model into fc1 units serving the first two: the merged side's inverse Hessian is
    inv(H0) + inv(H1) ("sum_of_inverses") or inv(H0 + H1) ("exact")."""
    damping = 1e-3
    models = [mlp(30), mlp(31), mlp(32, widths=(12, 8))]
    data = tuple(calib(rng, 150, (6, 6, 1)) ** (1 + t) for t in range(3))  # three different Hessians
    options = dict(sharing={"fc1": 1.0}, damping=damping, merged_hessian=merged_hessian, recalibrate_batchnorm=False, method="mtz")
    first_pass = tfmot_zip.zip_models(*models[:2], calibration_data=data[:2], **options)
    full = tfmot_zip.zip_models(*models, calibration_data=data, **options)
    hessians = []
    for x in data:
        acc = HessianAccumulator(36)
        acc.update(x.reshape(len(x), -1))
        hessians.append(acc.hessian())
    if merged_hessian == "exact":
        inv_merged = invert_hessian(hessians[0] + hessians[1], damping)
    else:
        inv_merged = invert_hessian(hessians[0], damping) + invert_hessian(hessians[1], damping)
    merged_rows = rows_of(*first_pass.get_layer("fc1").get_task_weights(0))  # 16 units serving tasks 0 and 1
    layer = full.get_layer("fc1")
    units = np.argsort(layer.get_maps(0)[1])  # merged rows in physical-unit order
    side_g = MergeSide.from_hessian_inverse(merged_rows[units], inv_merged, np.arange(37))
    side_n = direct_side(rows_of(*models[2].get_layer("fc1").get_weights()), hessians[2], np.arange(37), damping)
    rows, cols = select_pairs(merge_cost_matrix(side_g, side_n), 12, "hungarian")
    new_g, new_n = apply_merge(side_g, side_n, rows, cols)
    kernel, bias = layer.get_task_weights(2)
    np.testing.assert_allclose(kernel, new_n[:, :-1].T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bias, new_n[:, -1], rtol=1e-4, atol=1e-5)
    kernel0, _ = layer.get_task_weights(0)
    np.testing.assert_allclose(kernel0[:, units].T, new_g[:, :-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(layer.get_maps(2)[1][cols], layer.get_maps(0)[1][units][rows])
    # The other setting gives another answer, so a zipper ignoring merged_hessian fails here.
    inv_other = (invert_hessian(hessians[0], damping) + invert_hessian(hessians[1], damping)
                 if merged_hessian == "exact" else invert_hessian(hessians[0] + hessians[1], damping))
    side_other = MergeSide.from_hessian_inverse(merged_rows[units], inv_other, np.arange(37))
    _, other_n = apply_merge(side_other, side_n, rows, cols)
    assert not np.allclose(kernel, other_n[:, :-1].T, rtol=1e-4, atol=1e-5)



def test_conv_hessian_subsampling_is_an_argument_and_is_reported():
    import numpy as np
    from builders import calib, cnn

    rng = np.random.default_rng(0)
    a, b = cnn(1), cnn(2)
    x = calib(rng, 40, (10, 10, 1))  # conv1 sees 40 x 100 patch rows per task
    capped = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=1.0, max_conv_rows=100, method="mtz")
    report = tfmot_zip.zip_summary(capped)
    used, available = report.extra["hessian_subsampling"]["conv1"]  # a sample of 100 is the cheapest here
    assert available == 2 * 40 * 100 and used == 2 * 100  # both tasks' rows at the last measurement
    assert report.options["max_conv_rows"] == 100
    wide = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=1.0, max_conv_rows=4000, method="mtz")
    assert "hessian_subsampling" not in tfmot_zip.zip_summary(wide).extra  # no more rows than the cap: exact
    full = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=1.0, max_conv_rows=None, method="mtz")
    assert "hessian_subsampling" not in tfmot_zip.zip_summary(full).extra
    with pytest.raises(ValueError, match="max_conv_rows=0"):
        tfmot_zip.zip_models(a, b, calibration_data=(x, x), max_conv_rows=0, method="mtz")


def test_a_cap_that_costs_more_than_the_exact_hessian_samples_nothing():
    """Over ``max_conv_rows``, a conv whose exact Hessian costs no more than the sample (as
    ``conv_hessian_plan`` estimates) uses every row; one whose sample is cheaper samples."""
    import numpy as np
    from builders import calib, cnn
    from tfmot_zip.core.pixel_gram import conv_hessian_plan

    rng = np.random.default_rng(5)
    a, b = cnn(1, filters=(16, 8)), cnn(2, filters=(16, 8))
    x = calib(rng, 40, (10, 10, 1))  # conv1 reads 40 10x10x1 images, conv2 40 x 5x5x16 maps (9 patch rows each)
    shapes = {"conv1": ((10, 10), 1, 10 * 10), "conv2": ((5, 5), 16, 9)}  # spatial, channels, patch rows per image
    plans = {}
    for name, (spatial, channels, _) in shapes.items():
        conv = a.get_layer(name)
        plans.update({(name, cap): conv_hessian_plan(40, spatial, channels, conv.kernel_size, conv.strides, conv.padding,
                                                     max_rows=cap)[0] for cap in (20, 100, 200, 300)})
    assert "sampled_rows" in plans.values() and len(set(plans.values())) > 1  # both cases occur
    for cap in (20, 100, 200, 300):
        zipped = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=1.0, max_conv_rows=cap, method="mtz")
        subsampled = tfmot_zip.zip_summary(zipped).extra.get("hessian_subsampling", {})
        for name, (_, _, rows) in shapes.items():
            if plans[(name, cap)] == "sampled_rows":
                assert subsampled[name] == [2 * cap, 2 * 40 * rows]
            else:
                assert name not in subsampled


@pytest.mark.parametrize("method", ["shifted_products", "pixel_gram"])
def test_exact_conv_hessians_give_the_zip_of_the_patch_rows(monkeypatch, method):
    """The convs' Hessians from shifted products (core.conv_hessian) or from the maps' Gram matrix
    (core.pixel_gram) zip exactly as the Hessians of every patch row: same pairs, same weights
    (float32 products in all three)."""
    import numpy as np
    from builders import calib, cnn
    from tfmot_zip.zipping import statistics

    rng = np.random.default_rng(3)
    a, b = cnn(3, bn=True), cnn(4, bn=True)
    data = (calib(rng, 60, (10, 10, 1)), calib(rng, 50, (10, 10, 1)) * 2.0)
    kwargs = dict(calibration_data=data, sharing=0.75, max_conv_rows=None, method="mtz", progress=False)
    chosen = []

    def plan(*args, **kw):
        chosen.append(method)
        return method, {}

    monkeypatch.setattr(statistics, "conv_hessian_plan", plan)
    exact = tfmot_zip.zip_models(a, b, **kwargs)
    assert chosen
    monkeypatch.setattr(statistics, "conv_hessian_plan", lambda *args, **kw: ("patch_rows", {}))
    rows = tfmot_zip.zip_models(a, b, **kwargs)
    for name in ("conv1", "conv2", "fc1"):
        for t in range(2):
            assert np.array_equal(exact.get_layer(name).get_maps(t)[1], rows.get_layer(name).get_maps(t)[1])
            np.testing.assert_allclose(exact.get_layer(name).get_task_weights(t)[0],
                                       rows.get_layer(name).get_task_weights(t)[0], rtol=1e-4, atol=1e-5)
