"""sharing=Budget(...): exact parameter counting against strip_zipping, the allocation, its record
and report, and its errors; plus the sharing-argument fixes of issue 16 (numpy scalars, short errors)."""
import itertools
import json

import numpy as np
import pytest

from builders import calib, cnn, mlp, tiny_resnet

import tfmot_zip
from tfmot_zip.compat import keras
from tfmot_zip.core.budget import BudgetError, params_range, uniform_fraction, zipped_params
from tfmot_zip.model.graph import align_models
from tfmot_zip.model.spaces import trace_spaces
from tfmot_zip.zipping.budget import Budget, layer_shapes, uniform_for_budget


def _shapes(models):
    graph = align_models(models)
    return layer_shapes(graph, *trace_spaces(graph))


PAIRS = {
    "mlp_widths_differ": lambda: [mlp(0, widths=(7, 5), input_shape=(3, 3, 1)), mlp(1, widths=(5, 6), input_shape=(3, 3, 1))],
    "cnn_flatten": lambda: [cnn(0, filters=(3, 4), dense=5), cnn(1, filters=(4, 3), dense=4)],
    "cnn_batchnorm": lambda: [cnn(2, filters=(3, 3), dense=4, bn=True), cnn(3, filters=(3, 3), dense=4, bn=True)],
    "resnet_streams": lambda: [tiny_resnet(0), tiny_resnet(1)],
    "depthwise_and_separable": lambda: [depthwise_cnn(0, (3, 4)), depthwise_cnn(1, (4, 3))],
    "depthwise_with_bias": lambda: [depthwise_cnn(2, (4, 4), True), depthwise_cnn(3, (4, 2), True)],
}


def depthwise_cnn(seed, widths, dw_bias=False):
    """Conv2D, DepthwiseConv2D (with and without bias), a SeparableConv2D (zipped as depthwise + 1x1) and a head."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = inp = keras.Input((6, 6, 2), name="image")
    x = L.DepthwiseConv2D(3, padding="same", name="dw_input")(x)  # on the raw input: never shared
    x = L.Conv2D(widths[0], 3, padding="same", activation="relu", name="conv")(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=dw_bias, name="dw")(x)
    x = L.SeparableConv2D(widths[1], 3, strides=2, activation="relu", name="sep")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x), name=f"dw{seed}")


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_counted_params_equal_stripped_model(pair):
    """Every allocation on a small grid (0, some, all units per space): the count is the stripped model's."""
    models = PAIRS[pair]()
    shapes = _shapes(models)
    other = sum(m.count_params() for m in models) - sum(
        s.positions * i * o + (o if s.use_bias else 0) for s in shapes for i, o in zip(s.input_widths, s.widths))
    sizes = {s.space: min(s.widths) for s in shapes if not s.is_head}
    spaces = list(sizes)
    rng = np.random.default_rng(0)
    data = [calib(rng, 16, models[0].input_shape[1:]) for _ in models]
    combos = list(itertools.product(*[sorted({0, 1, sizes[s]}) for s in spaces]))
    if len(combos) > 12:  # the residual pair: every corner plus random interior points
        combos = [c for c in combos if len(set(c)) <= 1 or rng.random() < 0.15][:12]
    for combo in combos:
        units = dict(zip(spaces, combo))
        sharing = {s: k / sizes[s] for s, k in units.items()}
        zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=sharing, recalibrate_batchnorm=False)
        stripped = tfmot_zip.strip_zipping(zipped).count_params()
        assert zipped_params(shapes, units, other) == stripped, (pair, units)


def test_layer_shapes_of_a_residual_network_name_streams_by_first_writer():
    shapes = {s.name: s for s in _shapes([tiny_resnet(0), tiny_resnet(1)])}
    assert shapes["b1_conv2"].space == "stem"  # writes into the stem's stream
    assert shapes["b2_proj"].space == shapes["b2_conv2"].space
    assert shapes["b1_conv1"].input_space == "stem"
    assert shapes["head"].is_head and shapes["head"].input_space == shapes["b2_conv2"].space


@pytest.fixture(scope="module")
def pair():
    from tfmot_zip.apps.zoo import example_pair

    return example_pair(samples=60)


def test_budget_zip_meets_budget_and_records_allocation(pair, tmp_path):
    model_a, model_b, data = pair
    total = model_a.count_params() + model_b.count_params()
    budget = Budget(fraction=0.75, probe_fractions=(0.5, 1.0), holdout=10)
    zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=data, sharing=budget)
    stripped = tfmot_zip.strip_zipping(zipped).count_params()
    report = tfmot_zip.zip_summary(zipped)
    assert report.budget["budget"] == int(0.75 * total)
    assert report.budget["params"] == stripped <= 0.75 * total
    assert set(report.budget["fractions"]) == {"fc1", "fc2"}
    assert [f for f, _ in report.budget["drift"]["fc1"]] == [0.5, 1.0]
    assert report.options["sharing"] == report.budget["fractions"]  # the zip used the allocation
    assert report.budget["chosen"] in ("probes", "uniform", "refined")
    trades = [k for k in report.budget["checked"] if k.startswith("trade")]
    assert len(trades) <= budget.refine
    if report.budget["checked"]:  # the candidate kept is the one with the least drift
        assert report.budget["checked"][report.budget["chosen"]] == min(report.budget["checked"].values())
    assert "budget:" in str(report) and json.dumps(report.budget) and report.as_dict()["budget"] == report.budget
    # survives save/load; the other records keep their keys
    path = str(tmp_path / "z.keras")
    zipped.save(path)
    loaded = tfmot_zip.zip_summary(tfmot_zip.compat.keras.models.load_model(path))
    assert loaded.budget == report.budget
    assert {"shared", "merge_cost", "pairs", "options"} <= set(zipped.get_layer("fc1").zip_record)


def test_plain_sharing_has_no_budget_record(pair):
    model_a, model_b, data = pair
    report = tfmot_zip.zip_summary(tfmot_zip.zip_models(model_a, model_b, calibration_data=data, sharing=0.5))
    assert report.budget is None and "budget" not in report.as_dict() and "budget:" not in str(report)


def test_allocation_prefers_the_layer_whose_drift_is_smaller(pair, monkeypatch):
    """With fc2 made expensive to share, a budget that fc1 alone can meet leaves fc2 unshared."""
    from tfmot_zip.zipping import budget as budget_module

    model_a, model_b, data = pair
    real = budget_module.output_drift
    calls = []

    def fake_drift(original, outputs):
        calls.append(1)
        return real(original, outputs) + (100.0 if len(calls) > 2 else 0.0)  # probes of fc2 come after fc1's

    monkeypatch.setattr(budget_module, "output_drift", fake_drift)
    zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=data,
                                  sharing=Budget(params=1300, probe_fractions=(0.5, 1.0), holdout=10, verify=False))
    fractions = tfmot_zip.zip_summary(zipped).budget["fractions"]
    assert fractions["fc2"] == 0.0 and fractions["fc1"] > 0.0
    assert tfmot_zip.strip_zipping(zipped).count_params() <= 1300


# Registries for docs/BAD_INPUTS.md: (budget, pattern of the BudgetError) on the example pair,
UNREACHABLE_BUDGETS = [
    (Budget(params=10), r"cannot be met.*leaves 782.*between 782 and 1,510"),
    (Budget(params=10_000), r"cannot be met.*1,510"),
    (Budget(fraction=0.3), r"cannot be met"),
]
# (Budget keyword arguments, pattern of the ValueError),
BUDGET_ARGUMENT_CASES = [
    ({}, "exactly one"), ({"params": 5, "fraction": 0.5}, "exactly one"), ({"params": 0}, "positive integer"),
    ({"params": 1.5}, "positive integer"), ({"fraction": 1.5}, r"\(0, 1\]"), ({"fraction": 0.0}, r"\(0, 1\]"),
    ({"fraction": 0.5, "probe_fractions": ()}, "probe_fractions"), ({"fraction": 0.5, "holdout": 0}, "holdout"), ({"fraction": 0.5, "probe_samples": 0}, "probe_samples"),
]


def three_models_with_a_budget(model_a, model_b, data):
    model_c = tfmot_zip.compat.keras.models.clone_model(model_a)
    model_c._name = "task_c"
    return tfmot_zip.zip_models(model_a, model_b, model_c, calibration_data=data + (data[0],), sharing=Budget(fraction=0.9))


# (case, call on the example pair, pattern of the ValueError).
BUDGET_REFUSED_CASES = [
    ("a Budget with a schedule", lambda a, b, data: tfmot_zip.zip_models(a, b, calibration_data=None, sharing=Budget(fraction=0.9),
                                                                         schedule=tfmot_zip.LayerwiseSchedule()), "one-shot zipping"),
    ("a Budget for three models", three_models_with_a_budget, "two models"),
]


@pytest.mark.parametrize("budget, match", UNREACHABLE_BUDGETS)
def test_unreachable_budgets_give_the_range(pair, budget, match):
    model_a, model_b, data = pair
    with pytest.raises(BudgetError, match=match):
        tfmot_zip.zip_models(model_a, model_b, calibration_data=data, sharing=budget)


@pytest.mark.parametrize("kwargs, match", BUDGET_ARGUMENT_CASES)
def test_budget_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Budget(**kwargs)


@pytest.mark.parametrize("case, call, match", BUDGET_REFUSED_CASES, ids=[c[0] for c in BUDGET_REFUSED_CASES])
def test_budget_refused_with_a_schedule_and_with_three_models(pair, case, call, match):
    with pytest.raises(ValueError, match=match):
        call(*pair)


def test_verification_keeps_the_uniform_allocation_when_it_drifts_less(pair, monkeypatch):
    """Probes that call fc1 free and fc2 dear pick fc1 only; if the whole-model check finds the
    uniform allocation drifts less, the uniform one is kept, and the record says so."""
    from tfmot_zip.zipping import budget as budget_module

    model_a, model_b, data = pair
    values = iter([0.0, 0.0, 5.0, 9.0, 1.0, 0.5])  # fc1's probes, fc2's, the probes' candidate, uniform
    monkeypatch.setattr(budget_module, "output_drift", lambda original, outputs: next(values))
    zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=data,
                                  sharing=Budget(params=1300, probe_fractions=(0.5, 1.0), holdout=10, refine=0))
    record = tfmot_zip.zip_summary(zipped).budget
    assert record["checked"] == {"probes": 1.0, "uniform": 0.5} and record["chosen"] == "uniform"
    assert tfmot_zip.strip_zipping(zipped).count_params() == record["params"] <= 1300
    assert record["params"] == uniform_for_budget([model_a, model_b], 1300)[1]


def test_uniform_for_budget_is_the_smallest_fraction_that_fits():
    models = [mlp(0), mlp(1)]
    shapes = _shapes(models)
    low, high = params_range(shapes)
    for target in (low, (low + high) // 2, high - 1, high):
        fraction, params = uniform_for_budget(models, target)
        assert params <= target
        if fraction > 0:  # a little less sharing would not fit
            smaller = {s: int(round((fraction - 0.01) * min(l.widths))) for l in shapes if not l.is_head for s in [l.space]}
            assert zipped_params(shapes, smaller) > target or smaller == uniform_fraction(shapes, target)[1]


# --- issue 16: the sharing argument ------------------------------------------------------------

# Registries for docs/BAD_INPUTS.md: numpy scalars and 0-d arrays accepted as numbers,
NUMPY_SHARING_VALUES = [np.float64(0.5), np.float32(0.5), np.array(0.5), np.array(1, dtype=np.int64)]
# (case, sharing, pattern of the ValueError),
SHARING_VALUE_CASES = [
    ("an array of fractions", np.array([0.5, 0.5]), r"one number between 0 and 1.*shape \(2,\)"),
    ("np.float64(1.5)", np.float64(1.5), r"Received: sharing=1.5$"),
    ("a string", "half", r"Received: sharing='half' of type str"),
]


def many_unknown_keys(count: int = 100_000) -> dict:
    """A sharing dict naming ``count`` layers that do not exist (the error lists at most 10)."""
    return {f"layer_{i}": 0.5 for i in range(count)}


@pytest.mark.parametrize("value", NUMPY_SHARING_VALUES)
def test_numpy_scalar_sharing_is_a_number(pair, value):
    model_a, model_b, data = pair
    zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=data, sharing=value)
    expected = 8 if float(value) == 0.5 else 16
    assert tfmot_zip.zip_summary(zipped).layers[0].shared_units == expected
    per_layer = tfmot_zip.zip_models(model_a, model_b, calibration_data=data, sharing={"fc1": value})
    assert tfmot_zip.zip_summary(per_layer).layers[0].shared_units == expected


@pytest.mark.parametrize("case, sharing, match", SHARING_VALUE_CASES, ids=[c[0] for c in SHARING_VALUE_CASES])
def test_array_sharing_is_refused_clearly(pair, case, sharing, match):
    model_a, model_b, data = pair
    with pytest.raises(ValueError, match=match):
        tfmot_zip.zip_models(model_a, model_b, calibration_data=data, sharing=sharing)


def test_many_unknown_sharing_keys_give_a_short_error(pair):
    model_a, model_b, data = pair
    sharing = many_unknown_keys()
    with pytest.raises(ValueError) as err:
        tfmot_zip.zip_models(model_a, model_b, calibration_data=data, sharing=sharing)
    message = str(err.value)
    assert len(message) < 600, len(message)
    assert "'layer_9'" in message and "'layer_10'" not in message and "100,000 in all" in message


def test_refinement_keeps_the_budget_and_follows_trades_that_drift_less(pair, monkeypatch):
    """With a drift the probes cannot see (it depends on both spaces at once), the trades find a lower one."""
    from tfmot_zip.core.budget import zipped_params
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.model.spaces import trace_spaces
    from tfmot_zip.zipping import budget as budget_module

    model_a, model_b, data = pair
    graph = align_models([model_a, model_b])
    features, spaces = trace_spaces(graph)
    shapes = budget_module.layer_shapes(graph, features, spaces)
    sizes = {s.space: min(s.widths) for s in shapes if not s.is_head}
    zipped_with: list[dict] = []

    class _Predicts:
        def predict(self, *args, **kwargs):
            return None

    def fake_zip(*models, sharing, **options):
        zipped_with.append(dict(sharing))
        return _Predicts()

    def drift(original, zipped):  # least at fc1 0.2, fc2 1.0: the probes, each space alone, cannot see it
        f = zipped_with[-1]
        return (f.get("fc1", 0.0) - 0.2) ** 2 + (f.get("fc2", 0.0) - 1.0) ** 2

    monkeypatch.setattr(budget_module, "output_drift", drift)
    total = model_a.count_params() + model_b.count_params()
    budget = Budget(fraction=0.8, probe_fractions=(0.5, 1.0), holdout=10, refine=8)
    allocation = budget_module.allocate_budget(budget, [model_a, model_b], list(data), graph, features, spaces, fake_zip, {})
    trades = [k for k in allocation.checked if k.startswith("trade")]
    assert 0 < len(trades) <= 8
    assert allocation.chosen == "refined"
    assert allocation.checked["refined"] < min(allocation.checked["probes"], allocation.checked["uniform"])
    assert allocation.checked["refined"] == min(allocation.checked.values())
    assert allocation.params == zipped_params(shapes, allocation.units, total - budget_module.original_params(shapes))
    assert allocation.params <= allocation.budget
    other = total - budget_module.original_params(shapes)
    for sharing in zipped_with[-len(trades):]:  # every trade zipped kept the budget
        units = {s: round(f * sizes[s]) for s, f in sharing.items()}
        assert zipped_params(shapes, units, other) <= allocation.budget

