"""Which TFLite signatures a multi-task model gets: task names, input dependencies, signature plans.

A model with one output per task gets

* one signature per task: key = the task name (the output layer's name), inputs = the model
  inputs that task reads, one output named after the task;
* ``"all_tasks"`` (several outputs): every input, every output;
* ``"all_tasks_shared_input"`` (several outputs, all inputs of one shape and dtype): one input
  named ``"input"`` fed to every task.

Example:
    >>> from tfmot_zip.compat import keras
    >>> a, b = keras.Input((3,), name="a_in"), keras.Input((3,), name="b_in")
    >>> shared = keras.layers.Dense(4, name="shared")
    >>> model = keras.Model([a, b], [keras.layers.Dense(2, name="task_a")(shared(a)),
    ...                              keras.layers.Dense(2, name="task_b")(shared(b))])
    >>> [plan.key for plan in plan_signatures(model)]
    ['task_a', 'task_b', 'all_tasks', 'all_tasks_shared_input']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfmot_zip.compat import keras, tf

__all__ = [
    "ALL_TASKS",
    "ALL_TASKS_SHARED_INPUT",
    "SHARED_INPUT_NAME",
    "SignaturePlan",
    "unwrap_layer",
    "task_names",
    "input_dependencies",
    "plan_signatures",
]

ALL_TASKS = "all_tasks"
ALL_TASKS_SHARED_INPUT = "all_tasks_shared_input"
SHARED_INPUT_NAME = "input"


def unwrap_layer(layer: Any) -> Any:
    """The layer inside (possibly nested) ``keras.layers.Wrapper`` s, such as TFMOT's wrappers.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> dense = keras.layers.Dense(2, name="head")
        >>> unwrap_layer(keras.layers.TimeDistributed(dense)) is dense
        True
    """
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def task_names(model: keras.Model) -> list[str]:
    """Task names of a multi-task model: the names of its output layers.

    TFMOT wrappers rename layers (``quant_<name>``, ``prune_low_magnitude_<name>``); the name
    of the wrapped layer is used, so a QAT copy keeps the task names of its source.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,), name="head")])
        >>> task_names(m)
        ['head']
    """
    return [unwrap_layer(tensor._keras_history.layer).name for tensor in model.outputs]


def input_dependencies(model: keras.Model) -> list[list[int]]:
    """For each model output, the sorted indices of the model inputs it depends on.

    An output that depends on no input (a constant) is listed with every input.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> a, b = keras.Input((3,)), keras.Input((3,))
        >>> model = keras.Model([a, b], [keras.layers.Dense(2)(a), keras.layers.Dense(2)(b)])
        >>> input_dependencies(model)
        [[0], [1]]
    """
    input_index = {name: i for i, name in enumerate(model.input_names)}
    result = []
    for output in model.outputs:
        deps: set[int] = set()
        seen: set[int] = set()
        stack = [output]
        while stack:
            tensor = stack.pop()
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            layer, node_index, _ = tensor._keras_history
            if isinstance(layer, keras.layers.InputLayer):
                if layer.name in input_index:
                    deps.add(input_index[layer.name])
                continue
            node = layer._inbound_nodes[node_index]
            stack.extend(tf.nest.flatten(node.keras_inputs))
        result.append(sorted(deps) or list(range(len(model.inputs))))
    return result


@dataclass(frozen=True)
class SignaturePlan:
    """One signature of the TFLite file: its key and the model inputs and outputs it covers.

    Attributes:
        key: signature key (a task name, ``"all_tasks"`` or ``"all_tasks_shared_input"``).
        inputs: model input indices (for the shared-input signature: all of them).
        outputs: model output indices.
        shared_input: one input ``"input"`` is fed to every model input.

    Example:
        >>> SignaturePlan("task_a", inputs=(0,), outputs=(0,)).shared_input
        False
    """

    key: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    shared_input: bool = False


def plan_signatures(model: keras.Model) -> list[SignaturePlan]:
    """The signatures :func:`~tfmot_zip.export.export_tflite` writes for ``model``, in order.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,), name="head")])
        >>> plan_signatures(m)
        [SignaturePlan(key='head', inputs=(0,), outputs=(0,), shared_input=False)]
    """
    names = task_names(model)
    deps = input_dependencies(model)
    n_in = len(model.inputs)
    plans = [SignaturePlan(name, tuple(deps[t]), (t,)) for t, name in enumerate(names)]
    if len(names) > 1:
        every_output = tuple(range(len(names)))
        plans.append(SignaturePlan(ALL_TASKS, tuple(range(n_in)), every_output))
        specs = {(tuple(x.shape[1:].as_list()), x.dtype) for x in model.inputs}
        if len(specs) == 1:
            plans.append(SignaturePlan(ALL_TASKS_SHARED_INPUT, tuple(range(n_in)), every_output, shared_input=True))
    return plans
