"""Sharing given as a parameter budget: ``zip_models(..., sharing=Budget(fraction=0.6))``.

The library measures how much each hidden space (a layer, or a residual stream) costs to share:
it zips that space alone at a few fractions, with the options of the real zip, on most of the
calibration data, and measures the drift of every task's output from its original model
(KL divergence of the softmax outputs) on the held-out rest. Then it shares, per space, the
units that meet the budget at the least summed drift (:func:`tfmot_zip.core.budget.allocate`):
merging costs of different layers are not comparable, output drift is. The parameter count is
exact: it is what ``strip_zipping(zipped).count_params()`` gives (docs/BUDGET.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from tfmot_zip.core.budget import LayerShape, allocate, check_budget, original_params, trade, uniform_fraction, zipped_params
from tfmot_zip.model.graph import ModelGraph, UnsupportedModelError
from tfmot_zip.model.spaces import Feature, UnitSpace

__all__ = ["Budget", "BudgetAllocation", "layer_shapes", "output_drift", "allocate_budget", "uniform_for_budget"]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Budget:
    """At most ``params`` parameters (or ``fraction`` of the separate models') after zipping.

    Give exactly one of ``params`` and ``fraction``. The count is that of
    ``strip_zipping(zipped)``; heads stay task-specific.

    The allocation costs whole zips: one per hidden space and probe fraction, two to verify and up to
    ``refine`` more. A LeNet pair has two hidden spaces, a MobileNetV2 25, so for deep networks
    start with ``probe_fractions=(1.0,)`` and ``refine=0``: one zip per space.

    Attributes:
        params: most parameters of the zipped and stripped model.
        fraction: most parameters as a fraction (0..1] of the separate models' total.
        probe_fractions: fractions at which each space is zipped alone to measure its drift.
        holdout: calibration samples per task held out of the probes to measure the drift on.
        probe_samples: at most this many of the other calibration samples per task zip the probes
            (None: all); fewer make the probes faster and their drift noisier.
        verify: zip the allocation the probes suggest and the uniform fraction that fits the
            budget, every layer at once, and keep the one whose drift is smaller (the probes
            measure each layer alone; this sees how they add up).
        refine: then at most this many more whole zips, each of a trade that keeps the budget
            (some units of one space unshared, the fewest more of another shared), kept when it
            drifts less: a local search from the better candidate, steps of 10% of a space's
            width halved down to one unit when no trade helps (0: none).

    Example:
        >>> Budget(fraction=0.6).target(533_220)
        319932
        >>> Budget(params=300_000).target(533_220)
        300000
        >>> Budget(params=1, fraction=0.5)
        Traceback (most recent call last):
        ...
        ValueError: Give exactly one of params and fraction: Budget(params=300_000) or Budget(fraction=0.6). Received: params=1, fraction=0.5
    """

    params: int | None = None
    fraction: float | None = None
    probe_fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0)
    holdout: int = 1000
    probe_samples: int | None = 4000
    verify: bool = True
    refine: int = 6

    def __post_init__(self) -> None:
        if (self.params is None) == (self.fraction is None):
            raise ValueError(
                "Give exactly one of params and fraction: Budget(params=300_000) or Budget(fraction=0.6). "
                f"Received: params={self.params!r}, fraction={self.fraction!r}"
            )
        if self.params is not None and (not _is_int(self.params) or self.params <= 0):
            raise ValueError(f"Expected a positive integer number of parameters. Received: params={self.params!r}")
        if self.fraction is not None and (not _is_number(self.fraction) or not 0.0 < float(self.fraction) <= 1.0):
            raise ValueError(
                f"Expected a fraction of the separate models' parameters in (0, 1]. Received: fraction={self.fraction!r}"
            )
        probes = tuple(self.probe_fractions)
        if not probes or not all(_is_number(f) and 0.0 < float(f) <= 1.0 for f in probes):
            raise ValueError(f"Expected probe_fractions in (0, 1], e.g. (0.5, 1.0). Received: {self.probe_fractions!r}")
        if not _is_int(self.holdout) or self.holdout < 1:
            raise ValueError(f"Expected a positive integer holdout. Received: holdout={self.holdout!r}")
        if self.probe_samples is not None and (not _is_int(self.probe_samples) or self.probe_samples < 1):
            raise ValueError(
                f"Expected a positive integer probe_samples or None. Received: probe_samples={self.probe_samples!r}"
            )
        if not _is_int(self.refine) or self.refine < 0:
            raise ValueError(f"Expected a non-negative integer number of refining zips. Received: refine={self.refine!r}")
        object.__setattr__(self, "probe_fractions", tuple(sorted(float(f) for f in probes)))
        object.__setattr__(self, "params", None if self.params is None else int(self.params))
        object.__setattr__(self, "fraction", None if self.fraction is None else float(self.fraction))

    def target(self, original: int) -> int:
        """The most parameters allowed, for separate models of ``original`` parameters in all."""
        return int(self.params) if self.params is not None else int(math.floor(self.fraction * original + 1e-9))


@dataclass
class BudgetAllocation:
    """The sharing chosen for a budget, as stored in every zip layer's record under ``"budget"``.

    Attributes:
        budget: most parameters allowed.
        params: parameters of the zipped and stripped model with this allocation.
        params_original: parameters of the separate models.
        fractions: sharing fraction per space (keyed by the space's first writer, as ``sharing``).
        units: shared units per space.
        drift: per space, ``[fraction, drift]`` measured by zipping that space alone.
        checked: drift of each candidate zipped whole (``"probes"``, ``"uniform"``) when verified,
            and of each trade the refinement tried (``"trade 1"``, ...).
        chosen: the candidate kept (``"probes"``, ``"uniform"``, or ``"refined"`` when a trade
            drifted less than both; its drift is then ``checked["refined"]``).
        seconds: time spent measuring and allocating.
    """

    budget: int
    params: int
    params_original: int
    fractions: dict[str, float]
    units: dict[str, int]
    drift: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0
    checked: dict[str, float] = field(default_factory=dict)
    chosen: str = "probes"

    def as_config(self) -> dict:
        """A JSON-serialisable dict."""
        return {
            "budget": int(self.budget), "params": int(self.params), "params_original": int(self.params_original),
            "fractions": {k: float(v) for k, v in self.fractions.items()},
            "units": {k: int(v) for k, v in self.units.items()},
            "drift": {k: [[float(f), float(d)] for f, d in v] for k, v in self.drift.items()},
            "seconds": round(float(self.seconds), 3),
            "checked": {k: float(v) for k, v in self.checked.items()},
            "chosen": self.chosen,
        }


def layer_shapes(graph: ModelGraph, features: dict[int, Feature], spaces: dict[int, UnitSpace]) -> list[LayerShape]:
    """The parameter-count shape of every zip-able layer (heads included).

    Example:
        >>> from tfmot_zip.apps import zoo
        >>> from tfmot_zip.model.graph import align_models
        >>> from tfmot_zip.model.spaces import trace_spaces
        >>> graph = align_models([zoo.lenet5(), zoo.lenet5()])
        >>> shapes = layer_shapes(graph, *trace_spaces(graph))
        >>> [(s.name, s.input_space, s.positions) for s in shapes]
        [('conv1', None, 25), ('conv2', 'conv1', 25), ('fc1', 'conv2', 25), ('fc2', 'fc1', 1), ('head', 'fc2', 1)]
    """
    def space_name(space_id: int) -> str:
        return graph.nodes[spaces[space_id].writers[0]].name

    unmodelled = [n.name for n in graph.nodes if features[n.index].parts]
    if unmodelled:
        raise UnsupportedModelError(
            f"sharing=Budget(...) counts parameters of Dense/Conv2D/DepthwiseConv2D layers fed by one unit space; "
            f"layers {unmodelled[:3]} are channel concatenations, which it does not count yet. Pass a sharing "
            "fraction (e.g. sharing=0.6) or {layer_name: fraction} instead."
        )
    shapes = []
    for node in graph.nodes:
        if node.kind == "depthwise":  # one kernel per channel of the space it reads (and writes)
            if features[node.index].space not in spaces:  # on a raw input: never shared, counted in ``other``
                continue
            layer, out = node.layers[0], spaces[features[node.index].space]
            shapes.append(LayerShape(
                node.name, space_name(out.id), None, 1, int(np.prod(layer.kernel_size)),
                tuple(int(w) for w in out.widths), (1,) * len(node.layers), bool(layer.use_bias), False,
            ))
            continue
        if not node.is_zip:
            continue
        layer = node.layers[0]
        feature = features[node.inbound[0]]
        kernel = int(np.prod(layer.kernel_size)) if node.kind == "conv" else 1
        n_tasks = len(node.layers)
        if feature.kind == "input":
            input_space, input_units, input_widths = None, feature.input_units, (feature.input_units,) * n_tasks
        else:
            input_space, input_units = space_name(feature.space), 0
            input_widths = tuple(spaces[feature.space].widths)
        out = spaces[features[node.index].space]
        shapes.append(LayerShape(
            node.name, space_name(out.id), input_space, int(input_units), kernel * (feature.positions if feature.flat else 1),
            tuple(int(w) for w in out.widths), tuple(int(w) for w in input_widths), bool(layer.use_bias), node.is_head,
        ))
    return shapes


def output_drift(original: Sequence[np.ndarray], zipped: Sequence[np.ndarray]) -> float:
    """Mean over tasks and samples of ``KL(original || zipped)`` of the outputs.

    Outputs that are not probabilities (rows summing to 1) are taken as logits (softmax first).

    Example:
        >>> import numpy as np
        >>> p = np.array([[0.9, 0.1], [0.5, 0.5]])
        >>> output_drift([p], [p]), round(output_drift([p], [np.full((2, 2), 0.5)]), 4)
        (0.0, 0.184)
    """
    def probabilities(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        if np.all(x >= 0) and np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
            return np.clip(x, 1e-7, 1.0)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return np.clip(e / e.sum(axis=1, keepdims=True), 1e-7, 1.0)

    drifts = []
    for a, b in zip(original, zipped):
        p, q = probabilities(a), probabilities(b)
        drifts.append(float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))))
    return max(0.0, float(np.mean(drifts)))


def _count(models: Sequence[Any]) -> int:
    return int(sum(m.count_params() for m in models))


def uniform_for_budget(models: Sequence[Any], budget: Budget | int) -> tuple[float, int]:
    """The smallest single sharing fraction whose stripped count is at most the budget, and that count.

    Example:
        >>> from tfmot_zip.apps import zoo
        >>> uniform_for_budget([zoo.lenet_300_100(), zoo.lenet_300_100()], Budget(fraction=0.6))
        (0.82, 319856)
    """
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.model.spaces import trace_spaces

    graph = align_models(models)
    shapes = layer_shapes(graph, *trace_spaces(graph))
    total = _count(models)
    other = total - original_params(shapes)
    target = budget.target(total) if isinstance(budget, Budget) else int(budget)
    fraction, units = uniform_fraction(shapes, target, other)
    return fraction, zipped_params(shapes, units, other)


def _fractions(units: dict[str, int], sizes: dict[str, int]) -> dict[str, float]:
    """Sharing fractions of shared unit counts (per space)."""
    return {s: (k / sizes[s] if sizes[s] else 0.0) for s, k in units.items()}


def allocate_budget(
    budget: Budget,
    models: Sequence[Any],
    calibration: Sequence[np.ndarray] | None,
    graph: ModelGraph,
    features: dict[int, Feature],
    spaces: dict[int, UnitSpace],
    zip_fn: Callable[..., Any],
    zip_options: dict,
    log: Callable[[str], None] | None = None,
) -> BudgetAllocation:
    """Measures every hidden space's drift and chooses the sharing that meets ``budget``.

    Args:
        budget: the :class:`Budget`.
        models: the two models being zipped.
        calibration: their calibration inputs (None in scheduled zipping, which is refused).
        graph, features, spaces: the aligned graph and its unit spaces.
        zip_fn: ``zip_models`` (called with one space shared at a time).
        zip_options: keyword arguments of the probe zips (the real zip's options).
        log: called with one line per probe.

    Returns:
        The :class:`BudgetAllocation`; its ``fractions`` go to ``sharing``.

    Raises:
        ValueError: scheduled zipping, three or more models, or an unreachable budget
            (:class:`~tfmot_zip.core.budget.BudgetError`, giving the reachable range).

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair(samples=40)
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b),
        ...                               sharing=tfmot_zip.Budget(fraction=0.8, probe_fractions=(1.0,), holdout=8))
        >>> tfmot_zip.strip_zipping(zipped).count_params() <= 0.8 * 2 * model_a.count_params()
        True
    """
    start = time.perf_counter()
    if calibration is None:
        raise ValueError(
            "sharing=Budget(...) measures each layer on the calibration data, so it needs one-shot zipping "
            "(schedule=None); with a schedule, pass sharing as a fraction or {layer: fraction}."
        )
    if len(models) != 2:
        raise ValueError(
            f"sharing=Budget(...) allocates the sharing of two models; received {len(models)}. Zip two at a "
            "time, or pass sharing as a fraction or {layer: fraction}."
        )
    from tfmot_zip.zipping.distribute import Replicas

    Replicas.current().refuse_workers("sharing=Budget(...)", "Pass sharing as a fraction or {layer: fraction}.")
    shapes = layer_shapes(graph, features, spaces)
    total = _count(models)
    other = total - original_params(shapes)
    target = budget.target(total)
    check_budget(shapes, target, other)
    hidden = list(dict.fromkeys(s.space for s in shapes if not s.is_head))
    drift: dict[str, list] = {}
    if target < total:
        n = min(len(c) for c in calibration)
        held = min(budget.holdout, n // 5) or n
        fit = [(c[: len(c) - held] if held < n else c)[: budget.probe_samples] for c in calibration]
        evaluate = [c[len(c) - held:] for c in calibration]
        original = [m.predict(x, batch_size=1000, verbose=0) for m, x in zip(models, evaluate)]

        def measured(sharing: dict) -> float:
            zipped = zip_fn(*models, calibration_data=fit, sharing=sharing, progress=False, **zip_options)
            return output_drift(original, zipped.predict(list(evaluate), batch_size=1000, verbose=0))

        for space in hidden:
            drift[space] = []
            for fraction in budget.probe_fractions:
                drift[space].append((fraction, measured({space: fraction})))
                if log:
                    log(f"budget: {space} shared {fraction:.2f} alone -> drift {drift[space][-1][1]:.4g}")
    cost = {}
    for space in hidden:
        points = [(0.0, 0.0)] + drift.get(space, [])
        xs = [f for f, _ in points]
        ys = np.maximum.accumulate([d for _, d in points])  # sharing more never costs less
        cost[space] = lambda f, xs=xs, ys=ys: float(np.interp(f, xs, ys))
    units = allocate(shapes, target, cost, other)
    sizes = {s.space: min(s.widths) for s in shapes if not s.is_head}
    checked, chosen = {}, "probes"
    if budget.verify and drift:
        candidates = {"probes": units, "uniform": uniform_fraction(shapes, target, other)[1]}
        if candidates["uniform"] != units:
            for name, candidate in candidates.items():
                checked[name] = measured(_fractions(candidate, sizes))
                if log:
                    log(f"budget: {name} allocation {candidate} zipped whole -> drift {checked[name]:.4g}")
            chosen = min(candidates, key=lambda name: (checked[name], name != "probes"))
            units = candidates[chosen]
    if budget.refine and drift and len(hidden) > 1:
        if chosen not in checked:  # verification found both candidates equal, or was off
            checked[chosen] = measured(_fractions(units, sizes))
        best = checked[chosen]
        step = {s: max(1, round(0.1 * sizes[s])) for s in hidden}
        trials, seen = 0, {tuple(sorted(units.items()))}
        while trials < budget.refine:
            improved = False
            for give, take in ((g, t) for g in hidden for t in hidden if g != t):
                moved = trade(shapes, units, target, give, take, step[give], other) if trials < budget.refine else None
                if moved is None or tuple(sorted(moved.items())) in seen:
                    continue
                seen.add(tuple(sorted(moved.items())))
                trials += 1
                checked[f"trade {trials}"] = measured(_fractions(moved, sizes))
                if log:
                    log(f"budget: trade {moved} zipped whole -> drift {checked[f'trade {trials}']:.4g}")
                if checked[f"trade {trials}"] < best:
                    units, best, chosen, improved = moved, checked[f"trade {trials}"], "refined", True
            if not improved:
                if all(v == 1 for v in step.values()):
                    break
                step = {s: max(1, v // 2) for s, v in step.items()}
        if chosen == "refined":
            checked["refined"] = best
    fractions = _fractions(units, sizes)
    return BudgetAllocation(
        target, zipped_params(shapes, units, other), total, fractions, units,
        {k: [list(p) for p in v] for k, v in drift.items()}, time.perf_counter() - start, checked, chosen,
    )
