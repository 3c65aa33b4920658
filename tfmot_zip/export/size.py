"""Size and latency of a zipped model against the separate models, measured side by side.

:func:`size_latency_report` exports the stripped zipped model and every separate model the same
way (:func:`tfmot_zip.export.export_tflite`, same quantization), then reports parameters,
TFLite bytes (raw and gzipped) and the latency of every signature in the LiteRT interpreter,
against the separate models: each task's signature against its own separate model, and the
all-tasks signatures against running the separate models one after another.

Latency protocol: batch 1, ``num_threads`` threads (1 by default), one interpreter per file,
inputs set once, ``warmup`` untimed rounds, then ``runs`` rounds in which every measured item
(each zipped signature, each separate model, the separate models in sequence) is timed once,
in an interleaved order so that drifts of the machine hit all items alike; the median per item
is reported. ``invoke_ms`` times the interpreter's invoke of the signature's subgraph alone;
``call_ms`` times the public signature-runner call (copying inputs in and outputs out). Only
ratios measured in one run are meaningful; never assert on them in tests.

Typical use: ``size_latency_report(tfmot_zip.strip_zipping(zipped), [model_a, model_b],
(x_a[:1], x_b[:1]))["ratios"]["tflite_bytes"]``, about 0.53 for two LeNet-5 zipped at full
sharing.
"""
from __future__ import annotations

import gzip
import platform
import time
from typing import Any, Callable, Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.export.convert import QUANTIZE_MODES, export_tflite
from tfmot_zip.export.inputs import per_input_arrays
from tfmot_zip.export.interpreter import load_interpreter
from tfmot_zip.model.keras3 import as_tf_keras_model
from tfmot_zip.export.signatures import (
    ALL_TASKS,
    ALL_TASKS_SHARED_INPUT,
    SHARED_INPUT_NAME,
    input_dependencies,
    task_names,
)

__all__ = ["size_latency_report", "gzip_size", "count_params", "format_report"]


def gzip_size(data: bytes, level: int = 9) -> int:
    """Bytes of ``data`` after gzip at ``level`` (what a download or an app store ships).

    Example:
        >>> gzip_size(bytes(1000)) < 100
        True
    """
    return len(gzip.compress(bytes(data), compresslevel=level))


def count_params(model: keras.Model) -> dict[str, int]:
    """``{"params": every weight value, "nonzero_params": those not exactly zero}``.

    Each variable counts once, however many tasks use it (shared layers are counted once).

    Example:
        >>> from tfmot_zip.compat import keras
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> count_params(m)["params"]
        8
    """
    seen: dict[int, Any] = {}
    for weight in model.weights:
        seen.setdefault(id(weight), weight)
    total = nonzero = 0
    for weight in seen.values():
        values = np.asarray(weight.numpy())
        total += int(values.size)
        nonzero += int(np.count_nonzero(values))
    return {"params": total, "nonzero_params": nonzero}


class _Timer:
    """One timed item: a callable run with its inputs already set."""

    def __init__(self, name: str, invoke: Callable[[], Any], call: Callable[[], Any]):
        self.name = name
        self.invoke = invoke
        self.call = call
        self.invoke_times: list[float] = []
        self.call_times: list[float] = []

    def run(self, record: bool) -> None:
        start = time.perf_counter()
        self.invoke()
        middle = time.perf_counter()
        self.call()
        end = time.perf_counter()
        if record:
            self.invoke_times.append(middle - start)
            self.call_times.append(end - middle)

    def result(self) -> dict[str, float]:
        return {
            "invoke_ms": float(np.median(self.invoke_times) * 1e3),
            "call_ms": float(np.median(self.call_times) * 1e3),
        }


def _signature_timer(name: str, interpreter: Any, key: str, feeds: dict[str, np.ndarray]) -> _Timer:
    runner = interpreter.get_signature_runner(key)
    feeds = {n: np.ascontiguousarray(x[:1]) for n, x in feeds.items()}
    runner(**feeds)  # sets the inputs, allocates, and runs once

    def call() -> Any:
        return runner(**feeds)

    wrapper = getattr(runner, "_interpreter_wrapper", None)
    subgraph = getattr(runner, "_subgraph_index", None)
    if wrapper is not None and subgraph is not None and hasattr(wrapper, "Invoke"):
        def invoke() -> Any:  # the subgraph alone; inputs stay set from the call above
            return wrapper.Invoke(subgraph)
    else:  # pragma: no cover - LiteRT without the private hook
        invoke = call
    return _Timer(name, invoke, call)


def _sequence_timer(name: str, timers: Sequence[_Timer]) -> _Timer:
    def invoke() -> None:
        for t in timers:
            t.invoke()

    def call() -> None:
        for t in timers:
            t.call()

    return _Timer(name, invoke, call)


def size_latency_report(
    zipped_stripped: keras.Model,
    separate_models: Sequence[keras.Model],
    sample_inputs: Any,
    *,
    quantize: str | None = None,
    representative_data: Any = None,
    sparsity: bool = False,
    runs: int = 200,
    warmup: int = 20,
    num_threads: int = 1,
    zipped_tflite: bytes | None = None,
    separate_tflite: Sequence[bytes] | None = None,
) -> dict:
    """Parameters, TFLite bytes (raw, gzipped) and latency: zipped vs the separate models.

    Args:
        zipped_stripped: the stripped zipped model (``tfmot_zip.strip_zipping``), one output
            per task, possibly pruned (after ``strip_pruning``).
        separate_models: the single-task models, in the zipped model's task order.
        sample_inputs: inputs of the zipped model (one array for every input, one per input,
            or a dict keyed by input or task name); only the first sample is used (batch 1).
            Separate model ``t`` gets task ``t``'s input; the shared-input signature gets the
            first task's input.
        quantize: export mode for every file (see :func:`~tfmot_zip.export.export_tflite`).
        representative_data: calibration data of the zipped model for "int8" (as for
            ``export_tflite``); separate model ``t`` is calibrated on its task's data.
        sparsity: export with ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``.
        runs: timed rounds (the median is reported).
        warmup: untimed rounds first.
        num_threads: interpreter threads.
        zipped_tflite, separate_tflite: already exported files to measure instead of exporting
            (they must match the models and the mode).

    Returns:
        A JSON-ready dict: ``zipped`` (params, nonzero_params, tflite_bytes, gzip_bytes,
        latency per signature), ``separate`` (one entry per model), ``separate_total``
        (sums, and the latency of running the separate models one after another), ``ratios``
        (zipped / separate total; latency ratios use ``invoke_ms``) and ``protocol``.

    Raises:
        ValueError: mismatched numbers of tasks and models, bad ``runs``/``warmup``, or the
            export errors of ``export_tflite``.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
        >>> data = export_tflite(model)  # the same file as "zipped" and "separate": ratios of 1
        >>> report = size_latency_report(model, [model], np.ones((1, 4)), runs=3, warmup=0,
        ...                              zipped_tflite=data, separate_tflite=[data])
        >>> report["ratios"]["tflite_bytes"], sorted(report["zipped"]["signatures"])
        (1.0, ['task_a'])
    """
    zipped_stripped = as_tf_keras_model(zipped_stripped, "zipped_stripped")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"Unknown quantize={quantize!r}; expected one of {list(QUANTIZE_MODES)}.")
    for argument, value, minimum in (("runs", runs, 1), ("warmup", warmup, 0), ("num_threads", num_threads, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"Expected an integer >= {minimum}. Received: {argument}={value!r}")
    separate_models = [as_tf_keras_model(m, f"separate_models[{i}]") for i, m in enumerate(separate_models)]
    names = task_names(zipped_stripped)
    if len(separate_models) != len(names):
        raise ValueError(
            f"The zipped model has {len(names)} tasks {names}, but {len(separate_models)} separate models "
            "were given; pass one separate model per task, in the zipped model's task order."
        )
    inputs = per_input_arrays(zipped_stripped, sample_inputs, "sample_inputs", count=1)
    deps = input_dependencies(zipped_stripped)
    task_inputs = [inputs[deps[t][0]] for t in range(len(names))]
    if representative_data is not None:
        rep = per_input_arrays(zipped_stripped, representative_data, "representative_data")
        separate_rep = [rep[deps[t][0]] for t in range(len(names))]
    else:
        rep, separate_rep = None, [None] * len(names)

    if zipped_tflite is None:
        zipped_tflite = export_tflite(
            zipped_stripped, quantize=quantize, representative_data=rep, sparsity=sparsity
        )
    if separate_tflite is None:
        separate_tflite = [
            export_tflite(m, quantize=quantize, representative_data=r, sparsity=sparsity)
            for m, r in zip(separate_models, separate_rep)
        ]
    separate_tflite = list(separate_tflite)
    if len(separate_tflite) != len(separate_models):
        raise ValueError(f"separate_tflite needs {len(separate_models)} files; received {len(separate_tflite)}.")

    # --- interpreters and timers ---------------------------------------------------------
    zipped_interpreter = load_interpreter(zipped_tflite, num_threads=num_threads)
    signatures = zipped_interpreter.get_signature_list()
    input_names = list(zipped_stripped.input_names)
    timers: dict[str, _Timer] = {}
    for key, spec in signatures.items():
        if key == ALL_TASKS_SHARED_INPUT:
            feeds = {SHARED_INPUT_NAME: inputs[0]}
        else:
            feeds = {n: inputs[input_names.index(n)] for n in spec["inputs"]}
        timers[f"zipped/{key}"] = _signature_timer(f"zipped/{key}", zipped_interpreter, key, feeds)
    separate_timers = []
    for t, (model, data) in enumerate(zip(separate_models, separate_tflite)):
        interpreter = load_interpreter(data, num_threads=num_threads)
        keys = list(interpreter.get_signature_list())
        if len(keys) != 1:
            raise ValueError(
                f"Separate model {t} ({model.name!r}) exports {len(keys)} signatures {keys}; a separate "
                "model must have one task (one output)."
            )
        spec = interpreter.get_signature_list()[keys[0]]
        timer = _signature_timer(f"separate/{t}", interpreter, keys[0], {spec["inputs"][0]: task_inputs[t]})
        separate_timers.append(timer)
        timers[timer.name] = timer
    sequence = _sequence_timer("separate/sequence", separate_timers)
    timers[sequence.name] = sequence

    order = list(timers.values())
    rng = np.random.default_rng(0)
    for round_index in range(warmup + runs):
        for timer in (order[i] for i in rng.permutation(len(order))):
            timer.run(record=round_index >= warmup)
    latency = {name: timer.result() for name, timer in timers.items()}

    # --- sizes ---------------------------------------------------------------------------
    zipped_params = count_params(zipped_stripped)
    separate = []
    for t, (model, data) in enumerate(zip(separate_models, separate_tflite)):
        separate.append(
            {
                "task": names[t],
                "model": model.name,
                **count_params(model),
                "tflite_bytes": len(data),
                "gzip_bytes": gzip_size(data),
                "latency": latency[f"separate/{t}"],
            }
        )
    total = {
        key: int(sum(entry[key] for entry in separate))
        for key in ("params", "nonzero_params", "tflite_bytes", "gzip_bytes")
    }
    total["latency_sequential"] = latency["separate/sequence"]
    zipped = {
        **zipped_params,
        "tflite_bytes": len(zipped_tflite),
        "gzip_bytes": gzip_size(zipped_tflite),
        "signatures": {key: latency[f"zipped/{key}"] for key in signatures},
    }

    def ratio(a: float, b: float) -> float | None:
        return float(a / b) if b else None

    ratios = {key: ratio(zipped[key], total[key]) for key in ("params", "nonzero_params", "tflite_bytes", "gzip_bytes")}
    for t, name in enumerate(names):
        if name in signatures:
            ratios[f"latency_{name}"] = ratio(
                latency[f"zipped/{name}"]["invoke_ms"], latency[f"separate/{t}"]["invoke_ms"]
            )
    for key in (ALL_TASKS, ALL_TASKS_SHARED_INPUT):
        if key in signatures:
            ratios[f"latency_{key}"] = ratio(latency[f"zipped/{key}"]["invoke_ms"], total["latency_sequential"]["invoke_ms"])
            ratios[f"latency_{key}_call"] = ratio(latency[f"zipped/{key}"]["call_ms"], total["latency_sequential"]["call_ms"])
    return {
        "quantize": quantize,
        "sparsity": bool(sparsity),
        "tasks": names,
        "zipped": zipped,
        "separate": separate,
        "separate_total": total,
        "ratios": ratios,
        "protocol": {
            "batch": 1,
            "num_threads": int(num_threads),
            "runs": int(runs),
            "warmup": int(warmup),
            "statistic": "median of interleaved rounds",
            "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
    }


def format_report(report: dict) -> str:
    """A plain-text table of a :func:`size_latency_report` result.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
        >>> data = export_tflite(model)  # the same file as "zipped" and "separate": ratios of 1
        >>> report = size_latency_report(model, [model], np.ones((1, 4)), runs=3, warmup=0,
        ...                              zipped_tflite=data, separate_tflite=[data])
        >>> print(format_report(report).splitlines()[0])
        quantity (float32)                        zipped      separate   ratio
    """
    zipped, total, ratios = report["zipped"], report["separate_total"], report["ratios"]
    mode = report["quantize"] or "float32"
    lines = [
        f"{'quantity (' + mode + ')':<34}{'zipped':>14}{'separate':>14}{'ratio':>8}",
    ]
    for key, label in (
        ("params", "parameters"),
        ("nonzero_params", "non-zero parameters"),
        ("tflite_bytes", "TFLite bytes"),
        ("gzip_bytes", "TFLite bytes gzipped"),
    ):
        value = ratios.get(key)
        lines.append(f"{label:<34}{zipped[key]:>14,}{total[key]:>14,}{(f'{value:.3f}' if value is not None else '-'):>8}")
    for t, name in enumerate(report["tasks"]):
        if name in zipped["signatures"]:
            mine = zipped["signatures"][name]["invoke_ms"]
            theirs = report["separate"][t]["latency"]["invoke_ms"]
            lines.append(f"{'latency ms, task ' + name:<34}{mine:>14.4f}{theirs:>14.4f}{mine / theirs:>8.3f}")
    for key in (ALL_TASKS, ALL_TASKS_SHARED_INPUT):
        if key in zipped["signatures"]:
            mine = zipped["signatures"][key]["invoke_ms"]
            theirs = total["latency_sequential"]["invoke_ms"]
            lines.append(f"{'latency ms, ' + key:<34}{mine:>14.4f}{theirs:>14.4f}{mine / theirs:>8.3f}")
    return "\n".join(lines)
