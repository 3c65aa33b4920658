"""The default recipe, ``method="mtz+refits"``: MTZ then both refits; ``method="mtz"`` stays the paper's."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tfmot_zip
from builders import calib, cnn, mlp
from tfmot_zip.zipping.options import DEFAULT_METHOD, RECIPES, resolve_method
from tfmot_zip.core.strategies import STRATEGIES

STEPS = ("refit_layers", "refit_heads", "repair")


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(sorted(STRATEGIES) + sorted(RECIPES)),
    deferred=st.booleans(),
    given_steps=st.fixed_dictionaries({name: st.sampled_from([None, True, False]) for name in STEPS}),
)
def test_resolve_method_takes_the_recipe_unless_a_step_is_given(method, deferred, given_steps):
    strategy, steps = resolve_method(method, deferred, **given_steps)
    base, implied = RECIPES.get(method, (method, {}))
    assert strategy == base and strategy in STRATEGIES
    for name in STEPS:
        if given_steps[name] is not None:  # an explicit choice always wins (a schedule refuses it later)
            assert steps[name] is given_steps[name]
        else:  # the recipe's steps are one-shot: dropped under a schedule; plain strategies have none
            assert steps[name] is (bool(implied.get(name)) and not deferred)


def test_resolve_method_refuses_an_unknown_method_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown method 'mtz\+refit'.*'mtz\+refits'.*paper's method alone"):
        resolve_method("mtz+refit")
    with pytest.raises(ValueError, match="Unknown method 3"):
        resolve_method(3)


def _same_weights(one, other):
    for a, b in zip(one.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("builder,shape", [(mlp, (6, 6, 1)), (lambda seed: cnn(seed, bn=True), (10, 10, 1))])
def test_default_is_mtz_followed_by_both_refits(rng, builder, shape):
    a, b = builder(41), builder(42)
    data = (calib(rng, 200, shape), calib(rng, 200, shape))
    assert DEFAULT_METHOD == "mtz+refits"
    default = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0)
    explicit = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz", refit_layers=True, refit_heads=True)
    paper = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz")
    _same_weights(default, explicit)
    assert default.get_layer("fc1").zip_record["options"]["refit_layers"] is True
    assert paper.get_layer("fc1").zip_record["options"]["refit_layers"] is False
    # The refits moved the weights away from the paper's update, and brought each task's outputs
    # closer to its original model's on the calibration data.
    assert any(not np.array_equal(x, y) for x, y in zip(default.get_weights(), paper.get_weights()))
    for task, (model, x) in enumerate(zip((a, b), data)):
        want = model.predict(x, verbose=0)
        error = {name: np.mean((z.predict(list(data), verbose=0)[task] - want) ** 2)
                 for name, z in (("default", default), ("paper", paper))}
        assert error["default"] < error["paper"]
    # Turning one step off keeps the other.
    no_heads = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, refit_heads=False)
    layers_only = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz", refit_layers=True)
    _same_weights(no_heads, layers_only)


def test_default_under_a_schedule_zips_with_mtz_alone(rng):
    a, b = mlp(43), mlp(44)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=None, schedule=tfmot_zip.OneShotSchedule())
    options = zipped.get_layer("fc1").zip_options
    assert options["method"] == "mtz" and not options["refit_layers"] and not options["refit_heads"]
    with pytest.raises(ValueError, match="one-shot zipping"):
        tfmot_zip.zip_models(a, b, calibration_data=None, refit_layers=True, schedule=tfmot_zip.OneShotSchedule())


@pytest.mark.parametrize("max_conv_rows", [None, 600])
def test_layer_refit_targets_are_the_original_preactivations(rng, max_conv_rows):
    """Nothing shared: the inputs are the originals', so the least squares (every patch row, or a
    random subset of them) recovers each original convolution and Dense layer exactly; a wrong
    patch order, padding or bias in the targets would not."""
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.zipping.refit import refit_layers

    a, b = cnn(45), cnn(46, filters=(3, 5))
    data = [calib(rng, 200, (10, 10, 1)), calib(rng, 150, (10, 10, 1))]  # more samples than fc1 has inputs
    zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=0.0, method="mtz")
    for name in ("conv1", "conv2", "fc1"):  # perturb, so that the refit has something to undo
        layer = zipped.get_layer(name)
        layer.assign_physical_kernel(layer.physical_kernel() + 0.1)
    assert refit_layers(zipped, align_models([a, b]), data, damping=1e-12, max_conv_rows=max_conv_rows) == ["conv1", "conv2", "fc1"]
    # With a sample of the rows, a ReLU-dead input channel of conv2 may have no non-zero row left
    # (nothing to fit: it keeps the prior), so only conv1, on the raw images, is checked then.
    for task, model in enumerate((a, b)):
        for name in ("conv1", "conv2", "fc1") if max_conv_rows is None else ("conv1",):
            kernel, bias = zipped.get_layer(name).get_task_weights(task)
            want_kernel, want_bias = model.get_layer(name).get_weights()
            np.testing.assert_allclose(kernel, want_kernel, atol=2e-4)
            np.testing.assert_allclose(bias, want_bias, atol=2e-4)


@pytest.mark.parametrize("passes, kept_bytes", [(0, None), (1, None), (3, None), (3, "one task"), (3, 0)])
def test_relu_passes_re_solve_with_relu_targets_as_brute_force_least_squares(rng, monkeypatch, passes, kept_bytes):
    """fc1 of a fully shared ReLU MLP pair: the refit equals the damped least squares on both tasks'
    stacked rows, re-solved ``passes`` times with relu_targets of the previous solution's predictions.
    The same whether the passes reuse the rows kept from the first solve (default budget), keep one
    task's but not the other's, or read them again (no budget)."""
    from tfmot_zip.core.refit import relu_targets
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.zipping import refit
    from tfmot_zip.zipping.refit import refit_layers


    a, b = mlp(3), mlp(4)
    data = [calib(rng, 300, (6, 6, 1)) - 0.5, calib(rng, 250, (6, 6, 1)) - 0.5]
    if kept_bytes is not None:
        if kept_bytes == "one task":  # a budget per task between the bytes of B's rows and of A's
            kept_bytes = sum(len(x) for x in data) * (36 + 1 + 16) * 8
        monkeypatch.setattr(refit, "KEPT_ROWS_BYTES", kept_bytes)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz")
    fc1 = zipped.get_layer("fc1")
    prior = np.vstack([fc1.physical_kernel().numpy(), fc1.bias.numpy()[None]]).astype(np.float64)
    xs, ys = [], []
    for task, model in enumerate((a, b)):
        in_map, out_map = fc1.get_maps(task)
        x = data[task].reshape(len(data[task]), -1).astype(np.float64)
        physical = np.zeros((len(x), fc1.input_capacity + 1))
        physical[:, in_map] = x
        physical[:, -1] = 1.0
        kernel, bias = model.get_layer("fc1").get_weights()
        y = np.zeros((len(x), fc1.capacity))
        y[:, out_map] = x @ kernel + bias
        xs.append(physical)
        ys.append(y)
    assert all(sorted(fc1.get_maps(t)[1].tolist()) == list(range(fc1.capacity)) for t in (0, 1))  # every column shared
    assert fc1.input_capacity == 36 and fc1.capacity == 16  # the sizes the "one task" budget assumes
    x, y = np.vstack(xs), np.vstack(ys)
    gram = x.T @ x
    lam = 1e-3 * np.mean(np.diag(gram))
    want = np.linalg.solve(gram + lam * np.eye(len(gram)), x.T @ y + lam * prior)
    first = want
    for _ in range(passes):
        want = np.linalg.solve(gram + lam * np.eye(len(gram)), x.T @ relu_targets(y, x @ want) + lam * prior)
    assert np.mean((y < 0) & (x @ first < 0)) > 0.05  # the passes had entries to relax
    assert refit_layers(zipped, align_models([a, b]), data, layers=["fc1"], relu_passes=passes) == ["fc1"]
    np.testing.assert_allclose(fc1.physical_kernel().numpy(), want[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fc1.bias.numpy(), want[-1], rtol=1e-4, atol=1e-5)
    if passes:
        assert not np.allclose(want, first, atol=1e-4)  # a pass changes the solution


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000), samples=st.integers(20, 300), tasks=st.integers(2, 3))
def test_the_layer_refit_takes_the_zips_sums_of_a_layer_reading_the_model_inputs(seed, samples, tasks):
    # A Dense layer on the model's inputs reads the same rows after zipping: the refit takes the
    # zip's sum [x 1]^T [x 1] (equal to the brute-force sum) and gives the refit that computes it.
    from tfmot_zip.zipping import api, statistics

    rng = np.random.default_rng(seed)
    models = [mlp(seed + t) for t in range(tasks)]
    data = tuple(calib(rng, samples + 7 * t, (6, 6, 1)) for t in range(tasks))
    seen = []
    refit = api.refit_layers_
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "refit_layers_", lambda *a, **k: seen.append(k["grams"]) or refit(*a, **k))
        reused = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, refit_heads="least_squares", progress=False)
        patch.setattr(statistics, "_KEPT_GRAM_DIM", 0)  # the zip keeps no sums: the refit computes them
        computed = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, refit_heads="least_squares", progress=False)
    assert sorted(seen[0]) == ["fc1"] and sorted(seen[0]["fc1"]) == list(range(tasks))
    for t, x in enumerate(data):
        rows = np.hstack([x.reshape(len(x), -1).astype(np.float64), np.ones((len(x), 1))])
        np.testing.assert_allclose(seen[0]["fc1"][t], rows.T @ rows, rtol=1e-10, atol=1e-8)
    assert seen[1] == {}
    for a, b in zip(reused.get_weights(), computed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_layer_whose_inputs_changed_after_the_zip_does_not_take_its_sums(rng):
    # A BatchNorm below the first Dense layer is re-estimated when the zip ends: that layer's inputs
    # are then neither the original model's nor what the zip summed before. Offered those sums, the
    # refit reads its rows again: the same weights as with no sums offered.
    from tfmot_zip.compat import keras
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.zipping.refit import refit_layers

    def model(seed):
        keras.utils.set_random_seed(seed)
        m = keras.Sequential([keras.layers.Flatten(input_shape=(6, 6, 1), name="flat"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.Dense(8, activation="relu", name="fc1"),
                              keras.layers.Dense(3, activation="softmax", name="head")], name=f"bnmlp{seed}")
        gamma, beta, mean, var = m.get_layer("bn").get_weights()
        m.get_layer("bn").set_weights([gamma, beta, mean + 0.5, var * 3.0])  # not the calibration data's statistics
        return m

    models = [model(1), model(2)]
    data = [calib(rng, 80, (6, 6, 1)), calib(rng, 90, (6, 6, 1))]
    stale = {}
    for t, (m, x) in enumerate(zip(models, data)):  # the sums the zip took before the BatchNorm changed
        rows = np.asarray(keras.Model(m.inputs, m.get_layer("fc1").input)(x), np.float64)
        rows = np.hstack([rows, np.ones((len(rows), 1))])
        stale[t] = rows.T @ rows
    zips = [tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, method="mtz", progress=False) for _ in range(2)]
    assert tfmot_zip.zip_summary(zips[0]).extra["batchnorm"]["updated"]  # the BatchNorm below fc1 changed
    graph = align_models(models)
    refit_layers(zips[0], graph, data, grams={"fc1": stale})
    refit_layers(zips[1], graph, data)
    for a, b in zip(zips[0].get_weights(), zips[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
