"""What the benchmark measures: strategies, scenarios and budgets, as plain configuration objects.

Nothing here imports TensorFlow; :mod:`benchmarks.measure` runs a :class:`BenchConfig`.

Example:
    >>> config = quick_config()
    >>> [s.name for s in config.scenarios][:2]
    ['lenet300_same_task', 'lenet300_split_classes']
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

__all__ = [
    "StrategySpec",
    "STRATEGIES",
    "Scenario",
    "BenchConfig",
    "full_config",
    "quick_config",
    "strategy",
]


@dataclass(frozen=True)
class StrategySpec:
    """One way of zipping: a ``zip_models`` method and pair selection, under a display label.

    ``options`` are further ``zip_models`` keyword arguments, as ``(name, value)`` pairs (the
    steps beyond the paper: ``refit_layers``, ``refit_heads``, ``repair``).
    """

    label: str
    method: str
    selection: str
    options: tuple[tuple[str, object], ...] = ()

    @property
    def is_baseline(self) -> bool:
        """A baseline of the paper's comparison: averaged pairs, nothing after the merge."""
        return self.method in BASELINE_METHODS and not self.options


BASELINE_METHODS = ("activation", "euclidean", "random")
#: Every strategy the library offers. Baselines select pairs with the exact (Hungarian) matching
#: of their own costs, so that only the cost and the merge rule differ from MTZ-hungarian.
#: "mtz-hungarian" is the paper's MTZ; "mtz+refits" is the library's default (MTZ, then the layer
#: and head refits), measured with the repair added and with Euclidean pairs under the same refits;
#: "mtz-lsq" pairs by the least-squares residual (alone and with the refits).
STRATEGIES: tuple[StrategySpec, ...] = (
    StrategySpec("mtz-hungarian", "mtz", "hungarian"),
    StrategySpec("mtz-greedy", "mtz", "greedy"),
    StrategySpec("activation", "activation", "hungarian"),
    StrategySpec("euclidean", "euclidean", "hungarian"),
    StrategySpec("random", "random", "hungarian"),
    StrategySpec("mtz+refits", "mtz+refits", "hungarian"),
    StrategySpec("mtz+refits+repair", "mtz+refits", "hungarian", (("repair", True),)),
    StrategySpec("euclidean+refits", "euclidean", "hungarian", (("refit_layers", True), ("refit_heads", True))),
    StrategySpec("mtz-lsq", "mtz-lsq", "hungarian"),
    StrategySpec("mtz-lsq+refits", "mtz-lsq", "hungarian", (("refit_layers", True), ("refit_heads", True))),
)
ALL_LABELS = tuple(s.label for s in STRATEGIES)
#: Retrained in the full run: the paper's comparison and the default (the other recipes are
#: measured right after zipping only, to keep the run short).
RETRAINED_LABELS = ("mtz-hungarian", "mtz-greedy", "activation", "euclidean", "random", "mtz+refits")
#: In ``Scenario.retrain_strategies``: the baseline with the best accuracy right after zipping.
BEST_BASELINE = "best-baseline"


def strategy(label: str) -> StrategySpec:
    """The strategy with this label; a clear error lists the known ones.

    Example:
        >>> strategy("mtz-greedy").selection
        'greedy'
    """
    for spec in STRATEGIES:
        if spec.label == label:
            return spec
    raise ValueError(f"Unknown strategy label {label!r}; expected one of {list(ALL_LABELS)}.")


@dataclass
class Scenario:
    """A pair of zoo models to zip, and how much of the grid to run on it.

    Attributes:
        name: short identifier (file names, JSON keys).
        title: one line for tables and plots.
        arch: zoo architecture of both models.
        tasks: the two :func:`tfmot_zip.data.make_task` names.
        seeds: training seed of each model.
        epochs: originals' training epochs (None: the zoo default).
        train_samples: originals trained on a seeded subset of this many examples (None: all).
        calibration_samples: calibration inputs per task for ``zip_models``.
        test_samples: evaluate on the first this-many test images per task (None: all).
        fractions: sharing fractions of the grid.
        strategies: labels of the strategies zipped at every fraction.
        retrain_strategies: labels of those also retrained (``retrain_steps`` joint steps);
            ``"best-baseline"`` adds the baseline with the best accuracy right after zipping.
        retrain_fractions: the fractions at which they are retrained (None: all).
        retrain_steps: the light retraining budget of the grid.
        scratch_steps: joint steps of the fully shared network trained from scratch; None: as
            many as one original's training; 0: skip.
        scratch_checkpoints: extra evaluation points of the from-scratch training.
        search: run the sharing search (MTZ-hungarian, up to ``BenchConfig.search_max_steps``).
        search_target: the share of one network's parameters the search should reach (report only).
    """

    name: str
    title: str
    arch: str
    tasks: tuple[str, str]
    seeds: tuple[int, int] = (0, 0)
    epochs: Optional[int] = None
    train_samples: Optional[int] = None
    calibration_samples: int = 10_000
    test_samples: Optional[int] = None
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    strategies: tuple[str, ...] = ALL_LABELS
    retrain_strategies: tuple[str, ...] = RETRAINED_LABELS
    retrain_fractions: Optional[tuple[float, ...]] = None
    retrain_steps: int = 300
    scratch_steps: Optional[int] = None
    scratch_checkpoints: tuple[int, ...] = (300, 1000)
    search: bool = True
    search_target: Optional[float] = None

    def __post_init__(self) -> None:
        for label in tuple(self.strategies) + tuple(self.retrain_strategies):
            if label != BEST_BASELINE:
                strategy(label)
        unknown = [s for s in self.retrain_strategies if s not in self.strategies and s != BEST_BASELINE]
        if unknown:
            raise ValueError(f"Scenario {self.name!r}: retrain_strategies {unknown} are not in strategies {list(self.strategies)}.")
        bad = [f for f in self.fractions if not 0.0 <= f <= 1.0]
        if bad:
            raise ValueError(f"Scenario {self.name!r}: sharing fractions must lie in [0, 1]; received {bad}.")


@dataclass
class BenchConfig:
    """The whole benchmark run.

    Attributes:
        scenarios: what to run, in order.
        quick: a few-minute smoke run (recorded in the results).
        out_dir: folder of ``results.json``, ``results.md`` and the PNGs.
        img_dir: where the PNGs go (default: ``out_dir``); the documented run uses ``docs/img``.
        learning_rate: Adam learning rate of every retraining (zipped models and the control).
        scratch_learning_rate: Adam learning rate of the from-scratch network (the originals' recipe).
        batch_size: examples per task per joint step.
        seed: seeds zipping and the order of retraining batches (the same for every strategy).
        damping: relative Hessian damping passed to ``zip_models``.
        search_fractions: sharing fractions tried by the search, from the highest down; it stops at
            the first that passes.
        search_refine: after the first pass, also try the midpoint with the failed fraction above.
        search_max_steps: joint retraining budget of one search trial.
        search_eval_every: steps between evaluations during a search trial.
        search_tolerance: a trial passes when, at one evaluation, every task is within this many
            points of its original's accuracy.
        search_vs_control: also search for the sharing at which every task is within the
            tolerance of the control (the originals trained on for the same steps).
        cache_dir: zoo cache (None: ``$TFMOT_ZIP_CACHE`` or ``~/.cache/tfmot_zip``).
    """

    scenarios: list[Scenario] = field(default_factory=list)
    quick: bool = False
    out_dir: str = "out/bench"
    img_dir: Optional[str] = None
    learning_rate: float = 1e-4
    scratch_learning_rate: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    damping: float = 1e-4
    search_fractions: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
    search_refine: bool = True
    search_max_steps: int = 1000
    search_eval_every: int = 100
    search_tolerance: float = 0.5
    search_vs_control: bool = True
    cache_dir: Optional[str] = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _lenet_scenarios() -> list[Scenario]:
    return [
        Scenario(
            name="lenet300_same_task",
            title="LeNet-300-100, same task (all 10 classes), seeds 0 and 1",
            arch="lenet_300_100",
            tasks=("all", "all"),
            seeds=(0, 1),
            search_target=0.9,
        ),
        Scenario(
            name="lenet300_split_classes",
            title="LeNet-300-100, classes 0-4 vs classes 5-9",
            arch="lenet_300_100",
            tasks=("classes_0_4", "classes_5_9"),
            search_target=0.9,
        ),
        Scenario(
            name="lenet5_split_classes",
            title="LeNet-5, classes 0-4 vs classes 5-9",
            arch="lenet5",
            tasks=("classes_0_4", "classes_5_9"),
            # Conv Hessians cost (samples x positions) x patch^2: 2,000 images already give
            # 1.6M conv1 and 200k conv2 patch rows per task.
            calibration_samples=2_000,
            search_target=0.6,
        ),
    ]


def _resnet_scenario(quick: bool) -> Scenario:
    # ResNet-20 costs ~0.65 s of CPU per joint step here (~50x LeNet-300-100) and MTZ zipping
    # ~0.2 s of CPU per calibration image (21 conv Hessians), so its originals are trained on a
    # 10,000-image subset for 4 epochs, the grid is reduced, and there is no search or scratch.
    return Scenario(
        name="resnet20_split_classes",
        title="ResNet-20 (trained on 10k images, 4 epochs), classes 0-4 vs classes 5-9",
        arch="resnet20",
        tasks=("classes_0_4", "classes_5_9"),
        epochs=4,  # the same cached originals in --quick (training them once takes a few minutes)
        train_samples=10_000,
        calibration_samples=32 if quick else 128,
        test_samples=1_000 if quick else 2_000,
        fractions=(1.0,) if quick else (0.5, 1.0),
        strategies=("mtz-hungarian", "euclidean", "mtz+refits") if quick
        else ("mtz-hungarian", "activation", "euclidean", "mtz+refits", "mtz+refits+repair", "euclidean+refits"),
        retrain_strategies=("mtz-hungarian", "best-baseline", "mtz+refits"),
        retrain_fractions=(1.0,),
        retrain_steps=10 if quick else 100,
        scratch_steps=0,
        search=False,
    )


def full_config(resnet: bool = True, **overrides) -> BenchConfig:
    """The documented run (docs/RESULTS.md): every LeNet scenario at full budget.

    Example:
        >>> len(full_config(resnet=False).scenarios)
        3
    """
    scenarios = _lenet_scenarios()
    if resnet:
        scenarios.append(_resnet_scenario(quick=False))
    return BenchConfig(scenarios=scenarios, **overrides)


def quick_config(resnet: bool = False, **overrides) -> BenchConfig:
    """A few-minute run: fewer fractions and strategies, smaller calibration, shorter budgets.

    Example:
        >>> quick_config().search_max_steps
        300
    """
    scenarios = []
    for scenario in _lenet_scenarios():
        scenarios.append(
            dataclasses.replace(
                scenario,
                calibration_samples=min(scenario.calibration_samples, 1_000),
                fractions=(0.5, 1.0),
                strategies=("mtz-hungarian", "activation", "euclidean", "mtz+refits"),
                retrain_strategies=("mtz-hungarian", "activation", "mtz+refits"),
                retrain_steps=100,
                scratch_steps=300,
                scratch_checkpoints=(100,),
            )
        )
    if resnet:
        scenarios.append(_resnet_scenario(quick=True))
    settings = dict(
        quick=True,
        out_dir="out/bench-quick",
        search_fractions=(1.0, 0.75, 0.5),
        search_refine=False,
        search_max_steps=300,
    )
    settings.update(overrides)
    return BenchConfig(scenarios=scenarios, **settings)


def select_scenarios(config: BenchConfig, names: Sequence[str]) -> BenchConfig:
    """Keeps only the named scenarios (clear error on an unknown name)."""
    known = [s.name for s in config.scenarios]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"Unknown scenario {unknown}; this run has {known}.")
    config.scenarios = [s for s in config.scenarios if s.name in names]
    return config
