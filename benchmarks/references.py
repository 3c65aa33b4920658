"""The two references a zipped pair is compared with, besides the originals themselves.

- :func:`run_scratch`: a fully shared multi-task network of the same architecture (one trunk,
  one head per task) trained jointly from scratch.
- :func:`run_control`: the unzipped originals trained on with the retraining recipe (same steps,
  learning rate and batches), because originals that stopped on a noisy epoch gain from any extra
  low-rate training.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

from benchmarks.context import Context, accuracy_drops, train_with_checkpoints

__all__ = ["separate_models", "fully_shared_network", "run_scratch", "run_control"]


def separate_models(models: Sequence, names: Sequence[str]):
    """Copies of the original models side by side in one multi-input, multi-output model.

    Nothing is shared: joint training with summed losses trains each copy exactly as it would be
    trained alone (Adam is per weight), on the same batches a zipped model gets.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from benchmarks.references import separate_models
        >>> model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> separate_models([model, model], ["a", "b"]).input_names
        ['a_input', 'b_input']
    """
    from tfmot_zip.compat import keras
    from tfmot_zip.model.copying import copy_model

    inputs, outputs = [], []
    for model, name in zip(models, names):
        clone = copy_model(model)
        clone._name = f"{name}_copy"
        x = keras.Input(model.input_shape[1:], name=f"{name}_input")
        outputs.append(keras.layers.Activation("linear", name=name)(clone(x)))
        inputs.append(x)
    return keras.Model(inputs, outputs, name="separate_originals")


def fully_shared_network(arch: str, num_classes: Sequence[int], names: Sequence[str], input_shape: Sequence[int], seed: int = 0):
    """The zoo architecture without its head as one shared trunk, plus one softmax head per task.

    Each task has its own input (as in a zipped model), all of them through the same trunk.

    Example:
        >>> from benchmarks.references import fully_shared_network
        >>> net = fully_shared_network("lenet_300_100", [5, 5], ["a", "b"], (28, 28, 1))
        >>> net.count_params()
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
        "drop": accuracy_drops(ctx.original_accuracy, final),
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
