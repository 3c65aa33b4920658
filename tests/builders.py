"""Small tf_keras models (random weights) and synthetic calibration data shared by the tests.

A plain module (``from builders import mlp``), not ``conftest.py``: test folders may have conftests
of their own, and every conftest module is called ``conftest``."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tfmot_zip.compat import keras


def mlp(seed, widths=(16, 8), classes=3, name=None, input_shape=(6, 6, 1)):
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Flatten(input_shape=input_shape, name="flat")]
    for i, w in enumerate(widths):
        layers.append(keras.layers.Dense(w, activation="relu", name=f"fc{i + 1}"))
    layers.append(keras.layers.Dense(classes, activation="softmax", name="head"))
    return keras.Sequential(layers, name=name or f"mlp{seed}")


def cnn(seed, filters=(4, 6), dense=10, classes=3, name=None, bn=False):
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((10, 10, 1), name="image")
    x = keras.layers.Conv2D(filters[0], 3, padding="same", name="conv1")(x)
    if bn:
        x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(filters[1], 3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(dense, activation="relu", name="fc1")(x)
    out = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name=name or f"cnn{seed}")
    if bn:  # non-trivial BatchNorm statistics
        rng = np.random.default_rng(seed)
        layer = model.get_layer("bn1")
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(size=beta.shape) * 0.1,
                           rng.normal(size=mean.shape) * 0.1, rng.uniform(0.5, 2.0, var.shape)])
    return model


def randomize_batchnorm(model, seed):
    """Gives every BatchNormalization of ``model`` non-trivial statistics (in place); returns it."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(size=beta.shape) * 0.1,
                               rng.normal(size=mean.shape) * 0.1, rng.uniform(0.5, 2.0, var.shape)])
    return model


def generated_head(inp, x, spec, m, seed):
    """Tail of the hypothesis-generated test models: pooling (or Flatten), an optional Dense, a 3-class head;
    BatchNorm statistics randomised."""
    L = keras.layers
    if spec["conv"]:
        x = L.GlobalAveragePooling2D(name="gap")(x) if spec["gap"] else L.Flatten(name="flat")(x)
    if spec["dense"]:
        x = L.Dense(spec["dense"] + m, activation="relu", name="fc")(x)
    out = L.Dense(3, activation="softmax", name="head")(x)
    return randomize_batchnorm(keras.Model(inp, out, name=f"gen{m}"), seed)


def calib(rng, n, shape):
    return rng.random((n,) + tuple(shape)).astype("float32")


def tiny_resnet(seed, classes=3, name=None):
    """Stem + one identity block + one projection block (stride 2) + GAP head, with BatchNorm."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="b1_conv1")(x)
    y = keras.layers.ReLU(name="b1_relu")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", name="b1_conv2")(y)
    x = keras.layers.Add(name="b1_add")([x, y])
    x = keras.layers.ReLU(name="b1_out")(x)
    y = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="b2_conv1")(x)
    y = keras.layers.ReLU(name="b2_relu")(y)
    y = keras.layers.Conv2D(6, 3, padding="same", name="b2_conv2")(y)
    shortcut = keras.layers.Conv2D(6, 1, strides=2, name="b2_proj")(x)
    x = keras.layers.Add(name="b2_add")([shortcut, y])
    x = keras.layers.ReLU(name="b2_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name=name or f"res{seed}")


def assert_patch_hessian(acc, x, geometry, block: bool, split: int = 2, rtol: float = 1e-10, atol: float = 1e-10) -> None:
    """Feeds ``x`` to a conv Hessian accumulator in two batches and checks it against the brute-force
    Hessian of every patch row (per-position blocks with ``block``)."""
    from tfmot_zip.core.hessian import BlockHessianAccumulator, HessianAccumulator, extract_patches

    for part in np.array_split(x, [min(split, len(x))]):  # streamed in two batches (one may be empty)
        acc.update(part)
    rows = extract_patches(x, *geometry)
    kh, kw = geometry[0]
    c = x.shape[-1]
    ref = BlockHessianAccumulator(kh * kw, c, batch_dtype=np.float64) if block else HessianAccumulator(rows.shape[1])
    ref.update(rows)
    assert acc.count == ref.count == rows.shape[0]
    np.testing.assert_allclose(acc.hessian(), ref.hessian(), rtol=rtol, atol=atol)


def preprocessed_cnn(seed, name, preprocessing):
    """A small CNN with keras.applications-style preprocessing ("none", "rescaling", or "both":
    Rescaling then an adapted Normalization) before conv, BN, depthwise, dense and head."""
    L = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="image")
    x = inputs
    if preprocessing in ("rescaling", "both"):
        x = L.Rescaling(1 / 255.0, name="rescale")(x)
    if preprocessing == "both":
        norm = L.Normalization(axis=-1, name="norm")
        x = norm(x)
    x = L.Activation("swish", name="act")(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", name="conv")(x)))
    x = L.GlobalAveragePooling2D(name="gap")(L.DepthwiseConv2D(3, padding="same", name="dw")(x))
    outputs = L.Dense(3, activation="softmax", name="head")(L.Dense(12, activation="relu", name="fc")(x))
    model = keras.Model(inputs, outputs, name=name)
    if preprocessing == "both":
        norm.adapt(np.random.default_rng(seed).uniform(0, 1, (32, 8, 8, 3)).astype("float32"))
    return model


def preprocessed_pair(preprocessing, sharing, stripped):
    """Two :func:`preprocessed_cnn` zipped at ``sharing`` (stripped or not), with 64 random images
    (0-255) and labels per task: ``(model, images, labels)``."""
    import tfmot_zip

    a, b = preprocessed_cnn(1, "task_a", preprocessing), preprocessed_cnn(2, "task_b", preprocessing)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0, 255, (64, 8, 8, 3)).astype("float32") for _ in range(2)]
    ys = [rng.integers(0, 3, 64) for _ in range(2)]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=xs, sharing=sharing, progress=False)
    return (tfmot_zip.strip_zipping(zipped) if stripped else zipped), xs, ys
