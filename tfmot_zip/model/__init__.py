"""Reading and aligning models, unit spaces, the zip layers, building and stripping zipped models.

Keras glue only: the mathematics lives in :mod:`tfmot_zip.core`.
"""


def register_serializables() -> None:
    """Registers every object a zipped ``.keras`` file may name with tf_keras: ``ZipDense``,
    ``ZipConv2D``, ``ZipDepthwiseConv2D`` and the Keras 3 activations (imports TensorFlow).
    ``import tfmot_zip`` does it, except under the ``tfmot-zip`` command, which calls this before
    it loads a model.

    Example:
        >>> register_serializables()
        >>> from tfmot_zip.compat import keras
        >>> keras.saving.get_registered_object("tfmot_zip>ZipDepthwiseConv2D").__name__
        'ZipDepthwiseConv2D'
    """
    from tfmot_zip.model import activations, depthwise, layers  # noqa: F401  (registration on import)
