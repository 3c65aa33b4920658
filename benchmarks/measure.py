"""Runs a :class:`~benchmarks.scenarios.BenchConfig` and returns the results as one dict.

Small pure-ish functions (Flax-examples style) so that ``run.py`` only parses flags and the test
can run one tiny scenario:

- :func:`run_grid`: every strategy at every sharing fraction, accuracy right after zipping and
  after a fixed light joint retraining, parameters, zipping time, per-layer sharing.
- :func:`run_scratch`: the reference point, a fully shared multi-task network of the same
  architecture (one trunk, one head per task) trained jointly from scratch.
- :func:`run_control`: the unzipped originals trained on with the retraining recipe (same steps,
  learning rate and batches), because originals that stopped on a noisy epoch gain from any extra
  low-rate training.
- :func:`run_search`: the largest sharing at which MTZ-hungarian keeps every task within
  ``search_tolerance`` points of its original after at most ``search_max_steps`` joint steps.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from benchmarks.scenarios import BEST_BASELINE, BenchConfig, Scenario, strategy

__all__ = [
    "machine_info",
    "versions",
    "probe_resnet",
    "train_with_checkpoints",
    "separate_models",
    "fully_shared_network",
    "run_grid",
    "run_scratch",
    "run_control",
    "run_search",
    "run_scenario",
    "run_benchmark",
]

Log = Callable[[str], None]
History = list[tuple[int, list[float]]]


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------


def _git_state() -> Optional[str]:
    """Commit of the working tree, with ``+dirty`` when the package has uncommitted changes."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "tfmot_zip"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def versions() -> dict:
    """Versions of the stack that produced the figures."""
    import scipy

    import tfmot_zip
    from tfmot_zip.compat import keras, tf

    return {
        "tfmot_zip": tfmot_zip.__version__,
        "git": _git_state(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def machine_info() -> dict:
    """CPU model, core count, OS and the load average (the machine is shared: load matters)."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "load_average_1_5_15": load,
        "nice": os.nice(0) if hasattr(os, "nice") else None,
    }


def probe_resnet() -> dict:
    """Whether ``zip_models`` zips two (tiny, untrained) ResNet-20 and keeps them exact at sharing 0.

    Returns ``{"supported": bool, "error": str | None, "seconds": float}``; the error is the
    library's message when it refuses or fails.

    Example:
        >>> probe_resnet()["supported"]  # doctest: +SKIP
        True
    """
    import tfmot_zip
    from tfmot_zip.apps import zoo
    from tfmot_zip.compat import keras

    start = time.perf_counter()
    try:
        keras.utils.set_random_seed(0)
        models = [zoo.resnet20(num_classes=2, input_shape=(8, 8, 1), name=f"probe_{i}") for i in range(2)]
        x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
        exact = tfmot_zip.zip_models(*models, calibration_data=(x, x), sharing=0.0)
        outputs = exact([x, x], training=False)
        error = max(float(np.max(np.abs(np.asarray(o) - m(x, training=False).numpy()))) for o, m in zip(outputs, models))
        if error > 1e-4:
            raise AssertionError(f"sharing=0 changes the outputs by {error:.3g}")
        full = tfmot_zip.zip_models(*models, calibration_data=(x, x), sharing=1.0)
        if len(full.outputs) != 2:
            raise AssertionError(f"expected 2 outputs, got {len(full.outputs)}")
        return {"supported": True, "error": None, "seconds": round(time.perf_counter() - start, 2)}
    except Exception as err:  # noqa: BLE001 - any failure means "not supported"; the message is kept
        return {
            "supported": False,
            "error": f"{type(err).__name__}: {err}",
            "seconds": round(time.perf_counter() - start, 2),
        }


# --------------------------------------------------------------------------------------------------
# Models and training
# --------------------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time of this process (user + system, all threads): comparable across machine loads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _round(values: Sequence[float], digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


def _drops(originals: Sequence[float], accuracy: Sequence[float]) -> list[float]:
    return [round(o - a, 2) for o, a in zip(originals, accuracy)]


def evaluate_models(models: Sequence, tests: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Accuracy (%) of each single-task model on its own test set."""
    from tfmot_zip.training import accuracy

    return [accuracy(m.predict(x, batch_size=1000, verbose=0), y) for m, (x, y) in zip(models, tests)]


def train_with_checkpoints(
    model,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    checkpoints: Sequence[int],
    tests: Sequence[tuple[np.ndarray, np.ndarray]],
    learning_rate: float,
    batch_size: int = 128,
    seed: int = 0,
    stop: Optional[Callable[[int, list[float]], bool]] = None,
) -> History:
    """Joint training (one batch per task per step) evaluated at each checkpoint step.

    The batches are those of ``training.retrain`` with ``eval_every`` (one shuffle per chunk,
    seeded by the step), so every model trained with the same ``seed`` sees the same data.
    Stops early when ``stop(step, accuracies)`` is true.

    Returns:
        ``[(step, [accuracy per task])]``.
    """
    from tfmot_zip import training

    training.compile_multitask(model, learning_rate)
    history: History = []
    done = 0
    for step in sorted(set(int(c) for c in checkpoints)):
        if step > done:
            training.retrain(model, train_sets, step - done, learning_rate, batch_size=batch_size, seed=seed + done)
            done = step
        accuracies = _round(training.evaluate_tasks(model, tests))
        history.append((step, accuracies))
        if stop is not None and stop(step, accuracies):
            break
    return history


def separate_models(models: Sequence, names: Sequence[str]):
    """Copies of the original models side by side in one multi-input, multi-output model.

    Nothing is shared: joint training with summed losses trains each copy exactly as it would be
    trained alone (Adam is per weight), on the same batches a zipped model gets.
    """
    from tfmot_zip.compat import keras

    inputs, outputs = [], []
    for model, name in zip(models, names):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        clone._name = f"{name}_copy"
        x = keras.Input(model.input_shape[1:], name=f"{name}_input")
        outputs.append(keras.layers.Activation("linear", name=name)(clone(x)))
        inputs.append(x)
    return keras.Model(inputs, outputs, name="separate_originals")


def fully_shared_network(arch: str, num_classes: Sequence[int], names: Sequence[str], input_shape: Sequence[int], seed: int = 0):
    """The zoo architecture without its head as one shared trunk, plus one softmax head per task.

    Each task has its own input (as in a zipped model), all of them through the same trunk.

    Example:
        >>> net = fully_shared_network("lenet_300_100", [5, 5], ["a", "b"], (28, 28, 1))  # doctest: +SKIP
        >>> net.count_params()  # doctest: +SKIP
        266610
    """
    from tfmot_zip.apps import zoo
    from tfmot_zip.compat import keras

    keras.utils.set_random_seed(seed)
    base = zoo.build_model(arch, num_classes=num_classes[0], input_shape=tuple(input_shape), name=f"{arch}_base")
    trunk = keras.Model(base.inputs, base.get_layer("head").input, name="shared_trunk")
    inputs = [keras.Input(tuple(input_shape), name=f"{n}_input") for n in names]
    outputs = [
        keras.layers.Dense(k, activation="softmax", name=n)(trunk(x)) for x, k, n in zip(inputs, num_classes, names)
    ]
    return keras.Model(inputs, outputs, name=f"{arch}_fully_shared")


# --------------------------------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------------------------------


class Context:
    """What every measurement of one scenario needs: models, data, originals' figures."""

    def __init__(self, scenario: Scenario, config: BenchConfig, log: Log):
        from tfmot_zip import data
        from tfmot_zip.apps import zoo

        self.scenario, self.config, self.log = scenario, config, log
        self.tasks = [data.make_task(t) for t in scenario.tasks]
        self.trained = [
            zoo.train_on_task(
                scenario.arch, task, seed=seed, epochs=scenario.epochs, cache_dir=config.cache_dir,
                max_train_samples=scenario.train_samples,
            )
            for task, seed in zip(self.tasks, scenario.seeds)
        ]
        self.models = [t.model for t in self.trained]
        self.names = [m.name for m in self.models]
        n = scenario.test_samples
        self.tests = [(t.x_test[:n], t.y_test[:n]) if n else t.test for t in self.tasks]
        self.train_sets = [t.train for t in self.tasks]
        self.calibration = [t.x_train[: scenario.calibration_samples] for t in self.tasks]
        self.original_accuracy = _round(evaluate_models(self.models, self.tests))
        self.one_network_params = int(self.models[0].count_params())
        self.bn_recalibrated_accuracy = self._bn_recalibrated_accuracy()

    def _bn_recalibrated_accuracy(self) -> Optional[list[float]]:
        """The originals with their BatchNorm statistics re-estimated on the calibration images.

        ``zip_models`` re-estimates BatchNorm statistics after zipping; on models whose moving
        statistics lag their weights (short training) that alone changes the accuracy, so the
        same re-estimation on the unzipped originals is the fair reference. None without BatchNorm.
        """
        from tfmot_zip.compat import keras

        if not any(isinstance(l, keras.layers.BatchNormalization) for l in self.models[0].layers):
            return None
        from tfmot_zip.model.batchnorm import recalibrate_batchnorm

        copies = []
        for model, calibration in zip(self.models, self.calibration):
            copy = keras.models.clone_model(model)
            copy.set_weights(model.get_weights())
            # One flat model per task: recalibrate_batchnorm only sees top-level BatchNorm layers.
            if recalibrate_batchnorm(copy, [calibration]) == 0:
                raise RuntimeError(f"recalibrate_batchnorm found no BatchNorm layer in a copy of {model.name!r}")
            copies.append(copy)
        return _round(evaluate_models(copies, self.tests))

    def zip(self, fraction: float, label: str):
        import tfmot_zip

        spec = strategy(label)
        zipped = tfmot_zip.zip_models(
            *self.models, calibration_data=self.calibration, sharing=fraction, method=spec.method,
            selection=spec.selection, damping=self.config.damping,
            calibration_samples=self.scenario.calibration_samples, seed=self.config.seed,
        )
        return zipped, tfmot_zip.zip_summary(zipped)


def _to_retrain(scenario: Scenario, fraction: float, rows: Sequence[dict]) -> set[str]:
    """Labels retrained at this fraction; ``best-baseline`` picks the baseline best right after zipping."""
    if scenario.retrain_steps <= 0 or (scenario.retrain_fractions is not None and fraction not in scenario.retrain_fractions):
        return set()
    chosen = {label for label in scenario.retrain_strategies if label != BEST_BASELINE}
    if BEST_BASELINE in scenario.retrain_strategies:
        baselines = [r for r in rows if r["method"] != "mtz"]
        if baselines:
            chosen.add(max(baselines, key=lambda r: sum(r["zipped"]["accuracy"]))["strategy"])
    return chosen


def run_grid(ctx: Context) -> list[dict]:
    """Every strategy at every fraction: accuracy zipped and after ``retrain_steps`` joint steps.

    Per fraction, every strategy is zipped and evaluated first, then the retrained ones are
    retrained on the same batches (so ``best-baseline`` can be chosen from the zipped accuracy).
    """
    from tfmot_zip import training

    scenario, config = ctx.scenario, ctx.config
    rows: list[dict] = []
    total = len(scenario.fractions) * len(scenario.strategies)
    for fraction in scenario.fractions:
        models = {}
        here: list[dict] = []
        for label in scenario.strategies:
            spec = strategy(label)
            zipped, summary = ctx.zip(fraction, label)
            accuracy = _round(training.evaluate_tasks(zipped, ctx.tests))
            row = {
                "strategy": label,
                "method": spec.method,
                "selection": spec.selection,
                "fraction": fraction,
                "zipped": {"accuracy": accuracy, "drop": _drops(ctx.original_accuracy, accuracy)},
                "retrained": None,
                "params_zipped": summary.params_zipped,
                "shared_params": summary.shared_params,
                "shared_over_one_network": round(summary.shared_params / ctx.one_network_params, 4),
                "zip_seconds": round(summary.zip_seconds or 0.0, 3),
                "layers": [layer.as_dict() for layer in summary.layers],
            }
            ctx.log(
                f"    [{len(rows) + len(here) + 1}/{total}] f={fraction:<5g} {label:<14} zipped "
                f"{accuracy[0]:6.2f} / {accuracy[1]:6.2f}  ({row['zip_seconds']:.1f} s)"
            )
            models[label] = zipped
            here.append(row)
        chosen = _to_retrain(scenario, fraction, here)
        for row in here:
            if row["strategy"] not in chosen:
                continue
            start = time.perf_counter()
            history = train_with_checkpoints(
                models[row["strategy"]], ctx.train_sets, [scenario.retrain_steps], ctx.tests, config.learning_rate,
                config.batch_size, config.seed,
            )
            final = history[-1][1]
            row["retrained"] = {
                "steps": scenario.retrain_steps,
                "accuracy": final,
                "drop": _drops(ctx.original_accuracy, final),
                "seconds": round(time.perf_counter() - start, 2),
            }
            ctx.log(
                f"        f={fraction:<5g} {row['strategy']:<14} after {scenario.retrain_steps} joint steps "
                f"{final[0]:6.2f} / {final[1]:6.2f}"
            )
        rows += here
    return rows


def run_scratch(ctx: Context) -> Optional[dict]:
    """The fully shared network trained from scratch for as many joint steps as one original."""
    scenario, config = ctx.scenario, ctx.config
    steps = ctx.trained[0].train_steps if scenario.scratch_steps is None else scenario.scratch_steps
    if steps <= 0:
        return None
    net = fully_shared_network(
        scenario.arch, [t.num_classes for t in ctx.tasks], ctx.names, ctx.tasks[0].x_train.shape[1:], seed=config.seed
    )
    checkpoints = sorted({c for c in scenario.scratch_checkpoints if c < steps} | {steps})
    ctx.log(f"    fully shared network from scratch: {steps} joint steps, Adam {config.scratch_learning_rate:g}, evaluated at {checkpoints}")
    start = time.perf_counter()
    history = train_with_checkpoints(
        net, ctx.train_sets, checkpoints, ctx.tests, config.scratch_learning_rate, config.batch_size, config.seed
    )
    final = history[-1][1]
    ctx.log(f"      -> {final[0]:.2f} / {final[1]:.2f} after {history[-1][0]} steps ({time.perf_counter() - start:.0f} s)")
    return {
        "steps": history[-1][0],
        "learning_rate": config.scratch_learning_rate,
        "params": int(net.count_params()),
        "accuracy": final,
        "drop": _drops(ctx.original_accuracy, final),
        "history": [[s, a] for s, a in history],
        "seconds": round(time.perf_counter() - start, 1),
    }


def _control_checkpoints(ctx: Context) -> list[int]:
    config, scenario = ctx.config, ctx.scenario
    points = set()
    if scenario.search:
        points |= set(range(config.search_eval_every, config.search_max_steps + 1, config.search_eval_every))
    if scenario.retrain_steps > 0:
        points.add(scenario.retrain_steps)
    return sorted(points)


def run_control(ctx: Context) -> Optional[dict]:
    """The unzipped originals trained on with the retraining recipe, evaluated at the same steps."""
    config = ctx.config
    checkpoints = _control_checkpoints(ctx)
    if not checkpoints:
        return None
    ctx.log(f"    control: the unzipped originals trained on, Adam {config.learning_rate:g}, up to {checkpoints[-1]} joint steps")
    start = time.perf_counter()
    history = train_with_checkpoints(
        separate_models(ctx.models, ctx.names), ctx.train_sets, checkpoints, ctx.tests, config.learning_rate,
        config.batch_size, config.seed,
    )
    best = [max(a[t] for _, a in history) for t in range(len(ctx.models))]
    ctx.log("      -> " + ", ".join(f"{s}: {a[0]:.2f} / {a[1]:.2f}" for s, a in history if s in (checkpoints[0], ctx.scenario.retrain_steps, checkpoints[-1])))
    return {
        "learning_rate": config.learning_rate,
        "history": [[s, a] for s, a in history],
        "best": best,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _within(reference: Sequence[float], accuracies: Sequence[float], tolerance: float) -> bool:
    return all(r - a <= tolerance + 1e-9 for r, a in zip(reference, accuracies))


def _search_trial(ctx: Context, fraction: float, control: Optional[dict], need_original: bool, need_control: bool) -> dict:
    """Zips at ``fraction``, retrains until the needed criteria pass (or the budget ends).

    Criteria, checked at every evaluation: every task within the tolerance of its original
    (``pass_step``), and of the control at the same step (``control_pass_step``).
    """
    from tfmot_zip import training

    config = ctx.config
    tolerance = config.search_tolerance
    control_at = {0: ctx.original_accuracy}
    if control is not None:
        control_at.update((s, a) for s, a in control["history"])
    zipped, summary = ctx.zip(fraction, "mtz-hungarian")
    zipped_accuracy = _round(training.evaluate_tasks(zipped, ctx.tests))
    flags = {"original": None, "control": None}

    def record(step: int, accuracies: Sequence[float]) -> bool:
        if flags["original"] is None and _within(ctx.original_accuracy, accuracies, tolerance):
            flags["original"] = step
        if flags["control"] is None and step in control_at and _within(control_at[step], accuracies, tolerance):
            flags["control"] = step
        return (flags["original"] is not None or not need_original) and (flags["control"] is not None or not need_control)

    start = time.perf_counter()
    history: History = [(0, zipped_accuracy)]
    if not record(0, zipped_accuracy):
        checkpoints = range(config.search_eval_every, config.search_max_steps + 1, config.search_eval_every)
        history += train_with_checkpoints(
            zipped, ctx.train_sets, checkpoints, ctx.tests, config.learning_rate, config.batch_size, config.seed,
            stop=record,
        )
    by_step = dict(history)
    pass_step, control_step = flags["original"], flags["control"]
    trial = {
        "fraction": fraction,
        "shared_params": summary.shared_params,
        "shared_over_one_network": round(summary.shared_params / ctx.one_network_params, 4),
        "params_zipped": summary.params_zipped,
        "history": [[s, a] for s, a in history],
        "steps_run": history[-1][0],
        "passed": pass_step is not None,
        "pass_step": pass_step,
        "passed_vs_control": control_step is not None,
        "control_pass_step": control_step,
    }
    # Figures at the step the (original) criterion passed, else at the end of the budget.
    step = pass_step if pass_step is not None else history[-1][0]
    trial["steps"] = step
    trial["accuracy"] = by_step[step]
    trial["drop"] = _drops(ctx.original_accuracy, by_step[step])
    if step in control_at:
        trial["control_accuracy"] = control_at[step]
        trial["drop_vs_control"] = _drops(control_at[step], by_step[step])
    trial["retrain_seconds"] = round(time.perf_counter() - start, 1)
    best = " / ".join(f"{max(a[t] for _, a in history):.2f}" for t in range(len(ctx.models)))
    verdict = [f"vs originals: {'passes at step ' + str(pass_step) if pass_step is not None else 'fails' if need_original else 'not needed'}"]
    if control is not None:
        verdict.append(f"vs control: {'passes at step ' + str(control_step) if control_step is not None else 'fails' if need_control else 'not checked'}")
    ctx.log(
        f"    search f={fraction:<6g} shared {trial['shared_over_one_network']:.1%} of one network: zipped "
        f"{zipped_accuracy[0]:.2f} / {zipped_accuracy[1]:.2f}; {'; '.join(verdict)}; best {best} in {history[-1][0]} steps"
        + (f" (control then {control_at[history[-1][0]][0]:.2f} / {control_at[history[-1][0]][1]:.2f})" if history[-1][0] in control_at else "")
    )
    return trial


def _result(trial: Optional[dict]) -> Optional[dict]:
    return None if trial is None else {k: v for k, v in trial.items() if k != "history"}


def run_search(ctx: Context, control: Optional[dict]) -> Optional[dict]:
    """Going down ``search_fractions``, the first sharing at which MTZ-hungarian passes.

    A trial zips at the fraction, then retrains up to ``search_max_steps`` joint steps,
    evaluating every ``search_eval_every``; it passes at the first evaluation where every task is
    within ``search_tolerance`` points of its original. With ``search_refine``, the midpoint
    between the first pass and the failed fraction above it is tried too. With
    ``search_vs_control``, the search goes on down until a trial also passes against the
    control (the originals trained on for the same steps), a stricter criterion.
    """
    config = ctx.config
    if not ctx.scenario.search:
        return None
    use_control = config.search_vs_control and control is not None
    ctx.log(
        f"    sharing search: MTZ-hungarian, every task within {config.search_tolerance} point of its original "
        f"{'(and of the control) ' if use_control else ''}after <= {config.search_max_steps} steps (evaluated every {config.search_eval_every})"
    )
    trials: list[dict] = []
    passed = passed_control = None
    failed_above = None
    for fraction in config.search_fractions:
        need_original, need_control = passed is None, use_control and passed_control is None
        if not (need_original or need_control):
            break
        trial = _search_trial(ctx, fraction, control, need_original, need_control)
        trials.append(trial)
        if need_original:
            if trial["passed"]:
                passed = trial
            else:
                failed_above = fraction
        if need_control and trial["passed_vs_control"]:
            passed_control = trial
    if passed is not None and failed_above is not None and config.search_refine:
        middle = round((passed["fraction"] + failed_above) / 2, 4)
        trial = _search_trial(ctx, middle, control, True, False)
        trials.append(trial)
        if trial["passed"]:
            passed = trial
    target = ctx.scenario.search_target
    return {
        "strategy": "mtz-hungarian",
        "tolerance": config.search_tolerance,
        "max_steps": config.search_max_steps,
        "eval_every": config.search_eval_every,
        "learning_rate": config.learning_rate,
        "target_shared_over_one_network": target,
        "trials": trials,
        "result": _result(passed),
        "result_vs_control": _result(passed_control),
        "meets_target": None if passed is None or target is None else passed["shared_over_one_network"] >= target,
    }


def run_scenario(scenario: Scenario, config: BenchConfig, log: Log = print) -> dict:
    """Everything measured on one pair of models."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    log(f"== {scenario.name}: {scenario.title}")
    ctx = Context(scenario, config, log)
    seconds = {"originals": round(time.perf_counter() - started, 1)}
    cpu = {"originals": round(cpu_seconds() - cpu_started, 1)}
    log(
        f"    originals {ctx.names[0]} / {ctx.names[1]}: {ctx.original_accuracy[0]:.2f} / {ctx.original_accuracy[1]:.2f} %, "
        f"trained {ctx.trained[0].train_steps} / {ctx.trained[1].train_steps} steps, {ctx.one_network_params:,} parameters each"
        + ("" if ctx.bn_recalibrated_accuracy is None else
           f"; with BatchNorm statistics re-estimated: {ctx.bn_recalibrated_accuracy[0]:.2f} / {ctx.bn_recalibrated_accuracy[1]:.2f} %")
    )
    result = {
        "title": scenario.title,
        "arch": scenario.arch,
        "tasks": list(scenario.tasks),
        "task_names": ctx.names,
        "seeds": list(scenario.seeds),
        "calibration_samples": scenario.calibration_samples,
        "test_samples": [len(y) for _, y in ctx.tests],
        "originals": {
            "accuracy": ctx.original_accuracy,
            "bn_recalibrated_accuracy": ctx.bn_recalibrated_accuracy,
            "train_steps": [t.train_steps for t in ctx.trained],
            "train_samples": scenario.train_samples,
            "epochs": scenario.epochs,
            "params_each": [int(m.count_params()) for m in ctx.models],
            "params_separate": int(sum(m.count_params() for m in ctx.models)),
        },
    }
    phase, cpu_phase = time.perf_counter(), cpu_seconds()
    result["grid"] = run_grid(ctx)
    seconds["grid"] = round(time.perf_counter() - phase, 1)
    cpu["grid"] = round(cpu_seconds() - cpu_phase, 1)
    phase, cpu_phase = time.perf_counter(), cpu_seconds()
    result["control"] = run_control(ctx)
    seconds["control"] = round(time.perf_counter() - phase, 1)
    cpu["control"] = round(cpu_seconds() - cpu_phase, 1)
    phase, cpu_phase = time.perf_counter(), cpu_seconds()
    result["search"] = run_search(ctx, result["control"])
    seconds["search"] = round(time.perf_counter() - phase, 1)
    cpu["search"] = round(cpu_seconds() - cpu_phase, 1)
    phase, cpu_phase = time.perf_counter(), cpu_seconds()
    result["scratch"] = run_scratch(ctx)
    seconds["scratch"] = round(time.perf_counter() - phase, 1)
    cpu["scratch"] = round(cpu_seconds() - cpu_phase, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    cpu["total"] = round(cpu_seconds() - cpu_started, 1)
    result["seconds"] = seconds
    result["cpu_seconds"] = cpu
    log(f"    {scenario.name} done in {seconds['total']:.0f} s ({cpu['total']:.0f} s of CPU time: " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items() if k != "total") + ")")
    return result


def run_benchmark(
    config: BenchConfig,
    log: Log = print,
    on_update: Optional[Callable[[dict], None]] = None,
    resnet_probe: Optional[dict] = None,
) -> dict:
    """Runs every scenario of ``config``; ``on_update(results)`` after each (to save partial results)."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    results = {
        "schema": 1,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv and sys.argv[0] else None,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.as_dict(),
        "versions": versions(),
        "machine": machine_info(),
        "resnet_probe": resnet_probe,
        "scenarios": {},
        "complete": False,
    }
    for scenario in config.scenarios:
        results["scenarios"][scenario.name] = run_scenario(scenario, config, log)
        results["seconds"] = round(time.perf_counter() - started, 1)
        results["cpu_seconds"] = round(cpu_seconds() - cpu_started, 1)
        if on_update is not None:
            on_update(results)
    results["complete"] = True
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["cpu_seconds"] = round(cpu_seconds() - cpu_started, 1)
    results["machine_at_end"] = machine_info()
    if on_update is not None:
        on_update(results)
    return results
