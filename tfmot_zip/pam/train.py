"""Joint training and evaluation of a :class:`~tfmot_zip.pam.network.GroupedNetwork` (weights written back).

Each step feeds one batch of every task and sums the per-task losses (:mod:`tfmot_zip.training`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import tf
from tfmot_zip.data.tasks import multitask
from tfmot_zip.pam.network import GroupedNetwork
from tfmot_zip.training import compile_multitask, evaluate_tasks

__all__ = ["joint_batches", "finetune", "evaluate"]


def joint_batches(train_sets: Sequence[tuple[np.ndarray, np.ndarray]], batch_size: int = 64, seed: int = 0) -> "tf.data.Dataset":
    """:func:`tfmot_zip.data.tasks.multitask` batches; plain ``(x, y)`` batches for one task (a
    one-output model wants those).

    Example:
        >>> import numpy as np
        >>> x, y = np.zeros((8, 3), np.float32), np.zeros(8, np.int64)
        >>> xs, ys = next(iter(joint_batches([(x, y)], batch_size=4)))
        >>> tuple(xs.shape), tuple(ys.shape)
        ((4, 3), (4,))
    """
    data = multitask(*train_sets, batch_size=batch_size, seed=seed)
    if len(train_sets) == 1:
        data = data.map(lambda xs, ys: (xs[0], ys[0]))
    return data


def finetune(
    net: GroupedNetwork,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    steps: int,
    learning_rate: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    task_weights: Sequence[float] | None = None,
) -> GroupedNetwork:
    """Joint training (each step one batch per task, summed losses, ``task_weights`` per task), weights
    written back in place; the learning rate decays to 0 over ``steps`` (cosine).

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.pam.reading import separate_network
        >>> model = keras.Sequential([keras.layers.Dense(2, "softmax", input_shape=(3,), name="head")], name="a")
        >>> net = separate_network(model)
        >>> before = net.layers()[0].biases["a"].copy()
        >>> x, y = np.ones((16, 3), np.float32), np.zeros(16, np.int64)
        >>> bool(np.any(finetune(net, [(x, y)], steps=2, learning_rate=0.1, batch_size=8).layers()[0].biases["a"] != before))
        True
    """
    if steps <= 0:
        return net
    model = net.to_keras()
    compile_multitask(model, learning_rate, decay_steps=int(steps), loss_weights=task_weights)
    model.fit(joint_batches(train_sets, batch_size, seed), steps_per_epoch=int(steps), epochs=1, verbose=0)
    return net.read_weights(model)


def evaluate(net: GroupedNetwork, sets: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Accuracy (%) of every task on its own ``(x, y)``.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.pam.reading import separate_network
        >>> model = keras.Sequential([keras.layers.Dense(2, "softmax", input_shape=(3,), name="head")], name="a")
        >>> model.layers[0].set_weights([np.zeros((3, 2)), np.array([1.0, 0.0])])  # always class 0
        >>> evaluate(separate_network(model), [(np.ones((4, 3), np.float32), np.array([0, 0, 0, 1]))])
        [75.0]
    """
    return evaluate_tasks(net.to_keras(), list(sets))
