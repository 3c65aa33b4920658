"""The sharing search: the largest sharing at which MTZ-hungarian keeps every task near its original.

A trial zips at a fraction and retrains for at most ``search_max_steps`` joint steps; it passes
when every task is within ``search_tolerance`` points of its original (and, optionally, of the
control: the originals trained on for the same steps).
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

from benchmarks.context import Context, History, accuracy_drops, round_accuracies, train_with_checkpoints

__all__ = ["run_search"]


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
    zipped_accuracy = round_accuracies(training.evaluate_tasks(zipped, ctx.tests))
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
    trial["drop"] = accuracy_drops(ctx.original_accuracy, by_step[step])
    if step in control_at:
        trial["control_accuracy"] = control_at[step]
        trial["drop_vs_control"] = accuracy_drops(control_at[step], by_step[step])
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
