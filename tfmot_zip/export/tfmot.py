"""TFMOT integration of the zip layers: pruning and quantization-aware training (QAT).

Pruning. ``tfmot.sparsity.keras.prune_low_magnitude`` accepts a custom layer when it is a
``PrunableLayer`` or has a ``get_prunable_weights`` method; :class:`~tfmot_zip.model.layers.ZipDense` and
:class:`~tfmot_zip.model.layers.ZipConv2D` return their physical kernel there, and
:func:`register_with_tfmot` also registers them as virtual subclasses of ``PrunableLayer``, so
``isinstance(layer, PrunableLayer)`` holds as TFMOT's docs promise. A model returned by
``zip_models`` is compact: its kernels are stored as blocks of the cells some task reads (one per
group of input units read by the same tasks), each pruned to the target on its own. A model still
being zipped by a schedule holds one physical kernel with cells no task reads, over which the
magnitude threshold is also computed. QAT quantizes a compact layer's blocks one by one, as the
standard layers of ``strip_zipping`` are quantized. The documented route is ``strip_zipping`` first, then pruning the
standard layers (shared blocks stay shared: each is one layer called by several tasks).

Quantization. TFMOT's default 8-bit registry only knows built-in layers; custom layers are
quantized through a ``QuantizeConfig``. :class:`ZipDenseQuantizeConfig` and
:class:`ZipConv2DQuantizeConfig` mirror TFMOT's Dense/Conv2D configs (8-bit symmetric
narrow-range weights, per tensor for Dense and per output channel for Conv2D; 8-bit asymmetric
activations after the layer's activation). :func:`quantize_annotate_zipped` annotates a model
(zip layers with these configs, every other layer with TFMOT's default) and
:func:`zip_quantize_scope` makes the classes known to ``quantize_apply`` and to model loading.
:func:`quantize_zipped` does both steps. Stripped models need none of this:
``tfmot.quantization.keras.quantize_model(tfmot_zip.strip_zipping(zipped))`` works as is.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from tfmot_zip.compat import keras, tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TFMOT)

import tensorflow_model_optimization as tfmot  # noqa: E402

from tfmot_zip.export.signatures import unwrap_layer  # noqa: E402
from tfmot_zip.model.copying import copy_model  # noqa: E402
from tfmot_zip.model.depthwise import ZipDepthwiseConv2D  # noqa: E402
from tfmot_zip.model.layers import ZIP_LAYERS, ZipConv2D, ZipDense  # noqa: E402

#: Every layer class of a zipped model that TFMOT must know: the zip layers and the depthwise layers.
TFMOT_LAYERS = ZIP_LAYERS + (ZipDepthwiseConv2D,)

__all__ = [
    "register_with_tfmot",
    "ZipDenseQuantizeConfig",
    "ZipConv2DQuantizeConfig",
    "ZipDepthwiseConv2DQuantizeConfig",
    "custom_objects",
    "quantize_config_for",
    "quantize_annotate_zipped",
    "quantize_zipped",
    "zip_quantize_scope",
    "prune_zipped",
    "has_pruning_wrappers",
    "is_quantization_aware",
    "shared_layers",
]

_qk = tfmot.quantization.keras
_PrunableLayer = tfmot.sparsity.keras.PrunableLayer
_registered = False


def register_with_tfmot() -> None:
    """Registers the zip layers with TFMOT (idempotent; runs when this module is imported).

    ``ZipDense``/``ZipConv2D`` become virtual subclasses of
    ``tfmot.sparsity.keras.PrunableLayer`` (their ``get_prunable_weights`` returns the physical
    kernel), and the quantize configs of this module are registered as serializable
    (``tfmot_zip>ZipDenseQuantizeConfig``...), so QAT models with zip layers can be saved and
    loaded.

    Example:
        >>> import tensorflow_model_optimization as tfmot
        >>> from tfmot_zip.model.layers import ZipDense
        >>> register_with_tfmot()
        >>> isinstance(ZipDense([2], [3], 3), tfmot.sparsity.keras.PrunableLayer)
        True
    """
    global _registered
    if _registered:
        return
    for cls in TFMOT_LAYERS:
        _PrunableLayer.register(cls)
    _registered = True


class _ZipQuantizeConfig(_qk.QuantizeConfig):
    """8-bit QAT config of a zip layer: the physical kernel (a compact layer's blocks) and the activation."""

    per_axis_weights = False

    def __init__(self) -> None:
        self.weight_quantizer = _qk.quantizers.LastValueQuantizer(
            num_bits=8, per_axis=self.per_axis_weights, symmetric=True, narrow_range=True
        )
        self.activation_quantizer = _qk.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False
        )

    def _check(self, layer: Any) -> None:
        if not isinstance(layer, self.layer_class):
            raise TypeError(
                f"{type(self).__name__} quantizes {self.layer_class.__name__} layers; received layer "
                f"{getattr(layer, 'name', layer)!r} of type {type(layer).__name__}. Use "
                "tfmot_zip.export.tfmot.quantize_config_for(layer) to pick the right config."
            )

    def get_weights_and_quantizers(self, layer: Any) -> list:
        self._check(layer)
        return [(variable, self.weight_quantizer) for variable in layer.kernel_variables()]

    def get_activations_and_quantizers(self, layer: Any) -> list:
        self._check(layer)
        return [(layer.activation, self.activation_quantizer)]

    def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
        expected = len(layer.kernel_variables())
        if len(quantize_weights) != expected:
            raise ValueError(
                f"{type(self).__name__} expects {expected} quantized weight(s) (the kernel, or a compact layer's "
                f"kernel blocks) for layer {layer.name!r}; received {len(quantize_weights)}."
            )
        if layer.kernel_blocks is None:
            layer.kernel = quantize_weights[0]
        else:  # a compact layer: each block quantized on its own, as strip_zipping's layers will be
            layer._quantized_blocks = list(quantize_weights)

    def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
        if len(quantize_activations) != 1:
            raise ValueError(
                f"{type(self).__name__} expects one quantized activation for layer {layer.name!r}; "
                f"received {len(quantize_activations)}."
            )
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer: Any) -> list:
        return []

    def get_config(self) -> dict:
        return {}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))


@keras.utils.register_keras_serializable(package="tfmot_zip")
class ZipDenseQuantizeConfig(_ZipQuantizeConfig):
    """QAT config of :class:`~tfmot_zip.model.layers.ZipDense`: like TFMOT's Dense config.

    Kernel: 8-bit symmetric, narrow range, one scale per tensor. Activation output: 8-bit
    asymmetric moving-average range (one range for every task the layer serves).

    Example:
        >>> import tensorflow_model_optimization as tfmot
        >>> from tfmot_zip.model.layers import ZipDense
        >>> layer = tfmot.quantization.keras.quantize_annotate_layer(
        ...     ZipDense([3, 2], [4, 4], 4), quantize_config=ZipDenseQuantizeConfig())
    """

    layer_class = ZipDense
    per_axis_weights = False


@keras.utils.register_keras_serializable(package="tfmot_zip")
class ZipConv2DQuantizeConfig(_ZipQuantizeConfig):
    """QAT config of :class:`~tfmot_zip.model.layers.ZipConv2D`: like TFMOT's Conv2D config.

    Kernel: 8-bit symmetric, narrow range, one scale per physical output channel.
    Activation output: 8-bit asymmetric moving-average range.

    Example:
        >>> config = ZipConv2DQuantizeConfig()
        >>> config.weight_quantizer.per_axis
        True
    """

    layer_class = ZipConv2D
    per_axis_weights = True


@keras.utils.register_keras_serializable(package="tfmot_zip")
class ZipDepthwiseConv2DQuantizeConfig(_ZipQuantizeConfig):
    """QAT config of :class:`~tfmot_zip.model.depthwise.ZipDepthwiseConv2D`: 8-bit symmetric kernel (one
    scale per tensor), 8-bit asymmetric moving-average activation range.

    Example:
        >>> ZipDepthwiseConv2DQuantizeConfig().weight_quantizer.per_axis
        False
    """

    layer_class = ZipDepthwiseConv2D
    per_axis_weights = False


def quantize_config_for(layer: Any) -> _ZipQuantizeConfig:
    """The quantize config of a zip layer.

    Raises:
        TypeError: ``layer`` is not a ``ZipDense``, ``ZipConv2D`` or ``ZipDepthwiseConv2D``.

    Example:
        >>> from tfmot_zip.model.layers import ZipDense
        >>> type(quantize_config_for(ZipDense([2], [3], 3))).__name__
        'ZipDenseQuantizeConfig'
    """
    if isinstance(layer, ZipDense):
        return ZipDenseQuantizeConfig()
    if isinstance(layer, ZipConv2D):
        return ZipConv2DQuantizeConfig()
    if isinstance(layer, ZipDepthwiseConv2D):
        return ZipDepthwiseConv2DQuantizeConfig()
    raise TypeError(
        f"quantize_config_for expects a ZipDense, ZipConv2D or ZipDepthwiseConv2D layer; received "
        f"{getattr(layer, 'name', layer)!r} of type {type(layer).__name__}. Standard layers use "
        "TFMOT's default registry."
    )


def custom_objects() -> dict:
    """Every class a saved zipped or QAT-zipped model may name: the zip layers and their quantize configs.

    Example:
        >>> sorted(custom_objects())[:3]
        ['ZipConv2D', 'ZipConv2DQuantizeConfig', 'ZipDense']
    """
    return {
        "ZipDense": ZipDense,
        "ZipConv2D": ZipConv2D,
        "ZipDepthwiseConv2D": ZipDepthwiseConv2D,
        "ZipDenseQuantizeConfig": ZipDenseQuantizeConfig,
        "ZipConv2DQuantizeConfig": ZipConv2DQuantizeConfig,
        "ZipDepthwiseConv2DQuantizeConfig": ZipDepthwiseConv2DQuantizeConfig,
    }


@contextlib.contextmanager
def zip_quantize_scope() -> Iterator[None]:
    """``tfmot.quantization.keras.quantize_scope`` with the zip layers and their configs.

    Needed around ``quantize_apply`` of a model annotated by :func:`quantize_annotate_zipped`
    and (for parity with TFMOT) around loading a QAT model that contains zip layers.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> with zip_quantize_scope():
        ...     print(keras.utils.get_registered_object("ZipDenseQuantizeConfig").__name__)
        ZipDenseQuantizeConfig
    """
    register_with_tfmot()
    with _qk.quantize_scope(custom_objects()):
        yield


def _check_model(model: Any, function: str) -> keras.Model:
    from tfmot_zip.model.keras3 import as_tf_keras_model

    model = as_tf_keras_model(model)
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise ValueError(
            f"{function} needs a Sequential or functional tf_keras model; received the subclassed "
            f"model {model.name!r}. Rebuild it with the functional API."
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise ValueError(
                f"{function}: layer {layer.name!r} of model {model.name!r} is a nested model, which "
                "TFMOT quantization does not support. Flatten the model first (rebuild it so that "
                "every layer is called directly in one functional model)."
            )
    return model


def quantize_annotate_zipped(model: keras.Model, *, preserve_sparsity: bool = False) -> keras.Model:
    """Annotates the layers of ``model`` that QAT can quantize, zip layers with their zip quantize configs.

    The counterpart of ``tfmot.quantization.keras.quantize_annotate_model`` for models that
    contain ``ZipDense``/``ZipConv2D`` layers (it works on stripped models too). Layers already
    annotated are kept. Layers the scheme has no rule for (``Rescaling`` and ``Normalization``,
    the preprocessing of keras.applications' MobileNetV3 and EfficientNets), which TFMOT's
    whole-model call refuses, are left unannotated: they stay float during QAT, as TFMOT
    documents for layers one chooses not to quantize. Like TFMOT, the annotated model wraps the
    original layer objects; ``quantize_apply`` then builds new layers, so ``model`` is not changed
    by the whole flow.

    Args:
        model: a Sequential or functional tf_keras model (not nested).
        preserve_sparsity: decide what can be quantized by the registry of TFMOT's
            prune-preserving scheme instead of the default 8-bit one.

    Returns:
        The annotated model, to pass to ``tfmot.quantization.keras.quantize_apply`` inside
        :func:`zip_quantize_scope`.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.model.layers import ZipDense
        >>> a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
        >>> zipped = keras.Model([a, b], ZipDense([3, 2], [4, 4], 4, name="fc")([a, b]))
        >>> annotated = quantize_annotate_zipped(zipped)
        >>> [type(layer).__name__ for layer in annotated.layers]
        ['InputLayer', 'InputLayer', 'QuantizeAnnotate']
    """
    model = _check_model(model, "quantize_annotate_zipped")
    register_with_tfmot()
    # TFMOT's public API has no name for the annotation wrapper class.
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_annotate import (
        QuantizeAnnotate as annotate_cls,
    )

    registry = _scheme(preserve_sparsity).get_quantize_registry()

    def annotate(layer: Any) -> Any:
        if isinstance(layer, annotate_cls):
            return layer
        if isinstance(layer, TFMOT_LAYERS):
            return _qk.quantize_annotate_layer(layer, quantize_config=quantize_config_for(layer))
        return annotate_cls(layer) if registry.supports(layer) else layer

    return keras.models.clone_model(model, input_tensors=None, clone_function=annotate)


def quantize_zipped(model: keras.Model, *, preserve_sparsity: bool = False) -> keras.Model:
    """Quantization-aware copy of a zipped or stripped model (TFMOT default 8-bit scheme).

    Equivalent to ``quantize_apply(quantize_annotate_zipped(model), scheme)`` inside
    :func:`zip_quantize_scope`. Output layers are renamed ``quant_<name>`` by TFMOT; compile
    losses with ``model.output_names`` of the result.

    Args:
        model: a model from ``tfmot_zip.zip_models`` or ``tfmot_zip.strip_zipping`` (after
            ``strip_pruning`` if it was pruned).
        preserve_sparsity: use TFMOT's prune-preserving scheme
            (``Default8BitPrunePreserveQuantizeScheme``) so that zero weights of pruned standard
            layers stay zero during QAT. Zip layers' kernels are not sparsity-preserved (the
            scheme only knows built-in layers): strip the model first.

    Returns:
        A new QAT model (uncompiled).

    Raises:
        ValueError: the model still has pruning wrappers, is nested or subclassed.

    Typical use (``quantize_apply`` takes seconds even on a tiny model, so
    ``tests/export/test_tfmot_chains.py`` runs it): ``qat = quantize_zipped(plain)``, then
    ``qat.compile("adam", {n: "sparse_categorical_crossentropy" for n in qat.output_names})``.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> inner = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))], name="inner")
        >>> try:
        ...     quantize_zipped(keras.Sequential([inner], name="outer"))
        ... except ValueError as err:
        ...     print(str(err).split(",")[0])
        quantize_zipped: layer 'inner' of model 'outer' is a nested model
    """
    model = _check_model(model, "quantize_zipped")
    if has_pruning_wrappers(model):
        raise ValueError(
            f"Model {model.name!r} still has PruneLowMagnitude wrappers; call "
            "tfmot.sparsity.keras.strip_pruning(model) before quantizing it (and pass "
            "preserve_sparsity=True to keep its zeros during QAT)."
        )
    if preserve_sparsity and any(isinstance(l, TFMOT_LAYERS) for l in model.layers):
        raise ValueError(
            f"preserve_sparsity=True keeps zeros of built-in layers only, but model {model.name!r} "
            "has zip layers; call tfmot_zip.strip_zipping(model) first."
        )
    annotated = quantize_annotate_zipped(model, preserve_sparsity=preserve_sparsity)
    with zip_quantize_scope():
        return _qk.quantize_apply(annotated, _scheme(preserve_sparsity))


def _scheme(preserve_sparsity: bool) -> Any:
    if preserve_sparsity:
        return tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    return _qk.default_8bit.Default8BitQuantizeScheme()


def prune_zipped(model: keras.Model, **prune_params: Any) -> keras.Model:
    """``tfmot.sparsity.keras.prune_low_magnitude`` of every layer TFMOT can prune, the others left as they are.

    TFMOT's whole-model call refuses a model with a layer it has no pruning rule for, such as the
    ``Rescaling`` and ``Normalization`` preprocessing of keras.applications' MobileNetV3 and
    EfficientNets; its documented remedy is to clone the model and wrap only the layers to prune.
    This does that for a zipped or stripped model: layers TFMOT's registry knows (Dense, Conv2D,
    DepthwiseConv2D, BatchNormalization, ...) and zip layers are wrapped, the rest are kept. The
    result trains and strips (``tfmot.sparsity.keras.strip_pruning``) as TFMOT's own.

    Args:
        model: a Sequential or functional model (a stripped or zipped model).
        **prune_params: passed to ``prune_low_magnitude`` (``pruning_schedule``, ...).

    Example:
        >>> import tensorflow_model_optimization as tfmot
        >>> from tfmot_zip.compat import keras
        >>> x = keras.Input((4,))
        >>> model = keras.Model(x, keras.layers.Dense(2, name="fc")(keras.layers.Rescaling(0.5, name="scale")(x)))
        >>> pruned = prune_zipped(model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
        >>> [type(layer).__name__ for layer in pruned.layers]
        ['InputLayer', 'Rescaling', 'PruneLowMagnitude']
    """
    model = _check_model(model, "prune_zipped")
    register_with_tfmot()
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    def wrap(layer: Any) -> Any:
        prunable = (isinstance(layer, _PrunableLayer) or hasattr(layer, "get_prunable_weights")
                    or PruneRegistry.supports(layer))
        return tfmot.sparsity.keras.prune_low_magnitude(layer, **prune_params) if prunable else layer

    with keras.utils.custom_object_scope(custom_objects()):
        # TFMOT wraps the layer objects it is given: those of a copy, so training never changes ``model``
        return keras.models.clone_model(copy_model(model), clone_function=wrap)


def has_pruning_wrappers(model: keras.Model) -> bool:
    """True when ``model`` (or a model nested in it) has TFMOT ``PruneLowMagnitude`` wrappers.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> has_pruning_wrappers(keras.Sequential([keras.layers.Dense(2, input_shape=(3,))]))
        False
    """
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

    for layer in model.layers:
        if isinstance(layer, PruneLowMagnitude):
            return True
        if isinstance(layer, keras.Model) and has_pruning_wrappers(layer):
            return True
    return False


def is_quantization_aware(model: keras.Model) -> bool:
    """True when ``model`` (or a model nested in it) has TFMOT QAT layers.

    Checks the layer types (``QuantizeWrapper`` and its subclass ``QuantizeWrapperV2``,
    ``QuantizeLayer``); :func:`~tfmot_zip.export.export_tflite` uses it to tell a QAT model.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> is_quantization_aware(keras.Sequential([keras.layers.Dense(2, input_shape=(3,))]))
        False
    """
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    for layer in model.layers:
        if isinstance(layer, (QuantizeWrapper, QuantizeLayer)):
            return True
        if isinstance(layer, keras.Model) and is_quantization_aware(layer):
            return True
    return False


def shared_layers(model: keras.Model) -> dict[str, int]:
    """Layers with trainable weights that ``model`` calls more than once: ``{name: calls}``.

    Counts calls inside this model's graph only (a layer object reused by another model, as
    TFMOT's wrappers do, is not counted twice). In a stripped zipped model these are the
    weight blocks shared between tasks.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> dense = keras.layers.Dense(2, name="shared")
        >>> a, b = keras.Input((3,)), keras.Input((3,))
        >>> shared_layers(keras.Model([a, b], [dense(a), dense(b)]))
        {'shared': 2}
    """
    config = model.get_config()
    out = {}
    for spec in config.get("layers", []):
        layer = model.get_layer(spec["name"])
        inner = unwrap_layer(layer)  # TFMOT wrappers own bookkeeping weights
        calls = len(spec.get("inbound_nodes", []) or [])
        if calls > 1 and inner.trainable_weights:
            out[spec["name"]] = calls
    return out


register_with_tfmot()
