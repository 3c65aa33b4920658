"""One TFLite file with a signature per task subset of a grouped network, each running only its groups."""
from __future__ import annotations

import os
from typing import Sequence

from tfmot_zip.compat import tf
from tfmot_zip.core.pam_math import all_subsets
from tfmot_zip.io import atomic_write_bytes, temporary_directory
from tfmot_zip.pam.network import GroupedNetwork

__all__ = ["signature_key", "export_subsets_tflite"]


def signature_key(subset: Sequence[str]) -> str:
    """Signature key of a task subset in :func:`export_subsets_tflite`'s file.

    Example:
        >>> signature_key(("a", "c"))
        'tasks__a__c'
    """
    return "tasks__" + "__".join(subset)


def export_subsets_tflite(net: GroupedNetwork, path: str | os.PathLike, subsets: Sequence[Sequence[str]] | None = None) -> dict:
    """One TFLite file with a signature per task subset, each running only that subset's groups.

    Signature key ``tasks__<a>__<b>``, input ``image``, outputs named after the tasks. All
    signatures call the same layer objects, so each weight is stored once.

    Returns:
        ``{subset: signature key}``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.pam.reading import separate_network
        >>> model = keras.Sequential([keras.layers.Dense(2, "softmax", input_shape=(3,), name="head")], name="a")
        >>> export_subsets_tflite(separate_network(model), Path(tempfile.mkdtemp()) / "pam.tflite")
        {('a',): 'tasks__a'}
    """
    subsets = [tuple(s) for s in (subsets or all_subsets(net.task_names))]
    cache: dict = {}  # every subset's model calls the same layer objects
    module = tf.Module()
    module.models = []
    spec = tf.TensorSpec([None, *net.input_shape], tf.float32, name="image")
    signatures, keys = {}, {}
    for subset in subsets:
        model = net.to_keras(subset, single_input=True, cache=cache, name=signature_key(subset))
        module.models.append(model)

        def run(image, model=model, subset=subset):
            outs = model(image, training=False)
            outs = outs if isinstance(outs, list) else [outs]
            return {t: o for t, o in zip(subset, outs)}

        key = signature_key(subset)
        signatures[key] = tf.function(run, input_signature=[spec], autograph=False).get_concrete_function()
        keys[subset] = key
    with temporary_directory("tfmot_zip_pam_export_") as tmp:  # removed on SIGTERM/SIGINT too
        tf.saved_model.save(module, tmp, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
        flat = converter.convert()
    atomic_write_bytes(path, flat)
    return keys
