"""Reading a TFLite file without running it: is it a TFLite model, and which tensor types each signature has.

:func:`tflite_bytes` checks the flatbuffer identifier (``TFL3``) so a wrong file gets a clear error,
not the interpreter's; :func:`signature_tensor_types` lists the tensor types of every signature's
subgraph; :func:`tensor_type_problems` and :func:`check_tensor_types` check they are those of the quantization mode asked for (full
``"int8"``: int8 tensors and float32 only at the signature's inputs and outputs; float32: no
quantized tensor). ``export_tflite`` runs it after converting, ``verify_tflite`` before comparing.

Example:
    >>> from tfmot_zip.compat import keras
    >>> from tfmot_zip.export import export_tflite
    >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
    >>> types = signature_tensor_types(export_tflite(model))
    >>> types["task_a"].counts
    {'FLOAT32': 3}
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TFLITE_IDENTIFIER", "EXPECTED_TYPES", "SignatureTensors", "tflite_bytes", "signature_tensor_types",
    "tensor_type_problems", "check_tensor_types",
]

#: The file identifier of a TFLite flatbuffer, at bytes 4-8.
TFLITE_IDENTIFIER = b"TFL3"
_KNOWN_STARTS = {b"PK\x03\x04": "a zip archive, such as a .keras model", b"\x89HDF": "an HDF5 file, such as a .h5 model"}
_QUANTIZED_TYPES = {"INT8", "UINT8", "INT16", "INT4", "FLOAT16", "BFLOAT16", "UINT4", "INT2"}


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # the converter's copy of the same schema
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def tflite_bytes(tflite: Any, what: str = "the TFLite model") -> bytes:
    """The bytes of TFLite bytes or a ``.tflite`` file, with a clear ValueError if they are not a TFLite model.

    Example:
        >>> tflite_bytes(b"garbage")
        Traceback (most recent call last):
        ...
        ValueError: the TFLite model is not a TFLite file: its bytes 4-8 are b'age', not the TFLite identifier b'TFL3' (it starts with b'garbage'). Pass the bytes export_tflite returned or the path of a .tflite file it wrote.
    """
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        data = bytes(tflite)
    else:
        path = Path(tflite).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"TFLite file {str(path)!r} does not exist; pass the path export_tflite wrote.")
        data = path.read_bytes()
        what = f"file {str(path)!r}"
    if data[4:8] != TFLITE_IDENTIFIER:
        kind = next((f", {name}" for start, name in _KNOWN_STARTS.items() if data.startswith(start)), "")
        raise ValueError(
            f"{what} is not a TFLite file: its bytes 4-8 are {data[4:8]!r}, not the TFLite identifier "
            f"{TFLITE_IDENTIFIER!r} (it starts with {data[:12]!r}{kind}). Pass the bytes export_tflite "
            "returned or the path of a .tflite file it wrote."
        )
    return data


@dataclass(frozen=True)
class SignatureTensors:
    """The tensor types of one signature's subgraph.

    Attributes:
        key: the signature key.
        counts: ``{type name: number of tensors}`` (names of the TFLite schema: ``"FLOAT32"``, ``"INT8"``...).
        inner_float: names of the float32 tensors that are neither an input nor an output of the
            signature (a fully int8 signature has none).

    Example:
        >>> SignatureTensors("task_a", {"INT8": 5, "FLOAT32": 2}, ()).quantized
        5
    """

    key: str
    counts: dict
    inner_float: tuple

    @property
    def quantized(self) -> int:
        """Number of tensors of a quantized type (int8, uint8, int16, float16...)."""
        return sum(n for name, n in self.counts.items() if name in _QUANTIZED_TYPES)


def signature_tensor_types(tflite: Any) -> dict[str, SignatureTensors]:
    """``{signature key: SignatureTensors}`` of TFLite bytes or a ``.tflite`` file.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
        >>> signature_tensor_types(export_tflite(model, quantize="float16"))["task_a"].quantized  # the float16 kernel
        1
    """
    schema = _schema()
    data = tflite_bytes(tflite)
    model = schema.Model.GetRootAs(data, 0)
    type_names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    result = {}
    for s in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(s)
        key = signature.SignatureKey().decode()
        graph = model.Subgraphs(signature.SubgraphIndex())
        ends = set(graph.InputsAsNumpy().tolist()) | set(graph.OutputsAsNumpy().tolist())
        counts: Counter = Counter()
        inner = []
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            name = type_names.get(tensor.Type(), str(tensor.Type()))
            counts[name] += 1
            if name == "FLOAT32" and t not in ends:
                inner.append(tensor.Name().decode())
        result[key] = SignatureTensors(key, dict(counts), tuple(inner))
    return result


#: What :func:`tensor_type_problems` expects of each checked mode.
EXPECTED_TYPES = {
    "int8": "full integer: int8 tensors, float32 only at the inputs and outputs",
    None: "float32: no quantized tensors",
}


def tensor_type_problems(tflite: Any, quantize: str | None, *, integer_only: bool = True) -> list[str]:
    """How the signatures' tensor types differ from those of ``quantize`` (empty: as expected).

    ``"int8"``: every signature has int8 tensors and, with ``integer_only`` (post-training full
    integer), float32 tensors only at its inputs and outputs (which stay float32); without it
    (a quantization-aware model, which TFLite may run partly in float32) float32 parts are
    allowed. ``None`` (float32): no quantized tensor. ``"dynamic"`` and ``"float16"`` are not
    checked: the converter keeps small weights in float32 there.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
        >>> tensor_type_problems(export_tflite(model), "int8")
        ["signature 'task_a' has no int8 tensors ({'FLOAT32': 3})"]
    """
    problems = []
    for key, types in signature_tensor_types(tflite).items():
        if quantize == "int8":
            if not types.counts.get("INT8"):
                problems.append(f"signature {key!r} has no int8 tensors ({types.counts})")
            elif types.inner_float and integer_only:
                shown = list(types.inner_float[:5]) + (["..."] if len(types.inner_float) > 5 else [])
                problems.append(f"signature {key!r} computes in float32 ({len(types.inner_float)} float32 tensors inside: {shown})")
        elif quantize is None and types.quantized:
            problems.append(f"signature {key!r} has quantized tensors ({types.counts})")
    return problems


def check_tensor_types(tflite: Any, quantize: str | None, *, integer_only: bool = True) -> None:
    """Raises a ValueError naming the signatures whose tensor types are not those of ``quantize``.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
        >>> check_tensor_types(export_tflite(model, quantize="float16"), None)
        Traceback (most recent call last):
        ...
        ValueError: The TFLite model does not have the tensor types of quantize=None (float32: no quantized tensors): signature 'task_a' has quantized tensors ({'FLOAT32': 3, 'FLOAT16': 1}). Check the quantize mode the file was exported with.
    """
    problems = tensor_type_problems(tflite, quantize, integer_only=integer_only)
    if problems:
        raise ValueError(
            f"The TFLite model does not have the tensor types of quantize={quantize!r} ({EXPECTED_TYPES[quantize]}): "
            + "; ".join(problems) + ". Check the quantize mode the file was exported with."
        )
