"""TFMOT chains on zipped models: pruning, QAT, prune-preserving QAT, and zip layers with TFMOT.

A LeNet-300-100 pair (Fashion-MNIST classes 0-4 / 5-9, 2000 training images, 2 epochs) is zipped
at full sharing once per module; each test copies what it transforms (TFMOT wraps the original
layer objects), fits a few joint steps on ``tfmot_zip.data.multitask`` and checks numbers.
"""
from __future__ import annotations

import numpy as np
import pytest

import tensorflow_model_optimization as tfmot  # noqa: E402  (tfmot_zip sets TF_USE_LEGACY_KERAS on import)

import tfmot_zip
from tfmot_zip import data
from tfmot_zip.export import tfmot as tfmot_support
from tfmot_zip.apps import zoo
from tfmot_zip.compat import keras
from tfmot_zip.export import TOLERANCES, export_tflite, verify_tflite
from tfmot_zip.model.copying import copy_model
from tfmot_zip.model.layers import ZipConv2D, ZipDense

TASKS = ("classes_0_4", "classes_5_9")
sparsity_api = tfmot.sparsity.keras
quant_api = tfmot.quantization.keras


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cache = tmp_path_factory.mktemp("zoo")
    tasks = [data.make_task(name) for name in TASKS]
    models = [
        zoo.train_on_task("lenet_300_100", task, epochs=2, max_train_samples=2000, cache_dir=cache).model
        for task in tasks
    ]
    calibration = tuple(task.x_train[:512] for task in tasks)
    zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=1.0, task_names=list(TASKS))
    plain = tfmot_zip.strip_zipping(zipped)
    train = [(task.x_train[:2000], task.y_train[:2000]) for task in tasks]
    return {
        "models": models,
        "calibration": calibration,
        "zipped": zipped,
        "plain": plain,
        "train": train,
        "x": [task.x_test[:300] for task in tasks],
    }


def fit(model, train, steps, callbacks=(), learning_rate=1e-3):
    """Compiles with one loss per task, keyed by the (possibly TFMOT-renamed) output names."""
    model.compile(
        keras.optimizers.Adam(learning_rate),
        loss={name: "sparse_categorical_crossentropy" for name in model.output_names},
    )
    dataset = data.multitask(*train, batch_size=32)
    history = model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=list(callbacks))
    return history.history["loss"][-1]


def kernels(model):
    """``{layer name: kernel}`` of the Dense/Conv2D layers of a plain model."""
    return {
        layer.name: layer.kernel.numpy()
        for layer in model.layers
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
    }


def sparsity(array):
    return float(np.mean(array == 0))


def qat_float_weights(qat_model, float_model):
    """A copy of ``float_model`` holding the float (unquantized) weights trained inside ``qat_model``."""
    out = copy_model(float_model)
    for layer in out.layers:
        if layer.weights:
            wrapper = qat_model.get_layer(f"quant_{layer.name}")
            # The wrapper swaps the inner layer's kernel attribute for its fake-quantized
            # tensor, so the float variables are found among the wrapper's weights, by name.
            by_name = {w.name.split("/")[-1].split(":")[0]: w for w in wrapper.weights}
            layer.set_weights([by_name[w.name.split("/")[-1].split(":")[0]].numpy() for w in layer.weights])
    return out


def outputs(model, x):
    return [np.asarray(o) for o in model(x, training=False)]


def test_stripped_model_shares_blocks(setup):
    shared = tfmot_support.shared_layers(setup["plain"])
    assert set(shared) == {"fc1_input_to_shared", "fc2_shared_to_shared"}
    assert set(shared.values()) == {2}


def test_prune_stripped_model(setup):
    plain = setup["plain"]
    before = kernels(plain)
    pruning_schedule = sparsity_api.PolynomialDecay(0.3, 0.75, begin_step=0, end_step=3, frequency=1)
    pruned = sparsity_api.prune_low_magnitude(copy_model(plain), pruning_schedule=pruning_schedule)
    assert all(name.startswith("prune_low_magnitude_") for name in pruned.output_names)
    loss = fit(pruned, setup["train"], steps=5, callbacks=[sparsity_api.UpdatePruningStep()])
    assert np.isfinite(loss)
    stripped = sparsity_api.strip_pruning(pruned)
    for name, kernel in kernels(stripped).items():
        assert sparsity(kernel) == pytest.approx(0.75, abs=0.01), name
    # Shared blocks stay one layer called by both tasks, so their weights are stored once.
    assert tfmot_support.shared_layers(stripped) == tfmot_support.shared_layers(plain)
    assert stripped.count_params() == plain.count_params()
    shared_kernel = stripped.get_layer("fc1_input_to_shared").kernel
    assert sum(w is shared_kernel for w in stripped.weights) == 1
    # The source model is untouched (the pruning worked on a copy).
    for name, kernel in kernels(plain).items():
        np.testing.assert_array_equal(kernel, before[name])
    # The pruned model still classifies (sparse, but trained for a few steps only).
    xa, xb = setup["x"]
    (ya, yb) = (data.make_task(TASKS[0]).y_test[:300], data.make_task(TASKS[1]).y_test[:300])
    pa, pb = outputs(stripped, [xa, xb])
    assert np.mean(pa.argmax(-1) == ya) > 0.5 and np.mean(pb.argmax(-1) == yb) > 0.5


def test_qat_stripped_model_stays_close_to_float(setup):
    plain = setup["plain"]
    qat = quant_api.quantize_model(copy_model(plain))
    x = setup["x"]
    # QAT ranges are estimated while training (untrained, the input range is empty), so the
    # comparison is made after a few steps, against the float weights the QAT model trained.
    loss = fit(qat, setup["train"], steps=4, learning_rate=1e-4)
    assert np.isfinite(loss)
    assert set(tfmot_support.shared_layers(qat)) == {"quant_fc1_input_to_shared", "quant_fc2_shared_to_shared"}
    trained_float = qat_float_weights(qat, plain)
    changed = np.max(np.abs(trained_float.get_layer("fc1_input_to_shared").kernel.numpy() - plain.get_layer("fc1_input_to_shared").kernel.numpy()))
    assert changed > 0  # QAT did train the float weights
    for q, f in zip(outputs(qat, x), outputs(trained_float, x)):
        # Fake-quantization noise only, within the int8 tolerance of tfmot_zip.export.
        assert np.mean(np.abs(q - f)) < TOLERANCES["int8"].max_mean_abs
        assert np.mean(q.argmax(-1) == f.argmax(-1)) >= 0.95
    # A QAT model converts to int8 without representative data and keeps its task names.
    tflite = export_tflite(qat, quantize="int8")
    report = verify_tflite(tflite, qat, x, quantize="int8")
    assert set(report) == {*TASKS, "all_tasks", "all_tasks_shared_input"}
    assert report["all_tasks"]["argmax_agreement"] >= 0.95
    with pytest.raises(ValueError, match="quantize='int8'"):
        export_tflite(qat)


def test_prune_preserving_qat_keeps_sparsity(setup):
    pruned = sparsity_api.prune_low_magnitude(
        copy_model(setup["plain"]), pruning_schedule=sparsity_api.ConstantSparsity(0.8, begin_step=0, frequency=1)
    )
    fit(pruned, setup["train"], steps=3, callbacks=[sparsity_api.UpdatePruningStep()])
    stripped = sparsity_api.strip_pruning(pruned)
    zeros = {name: kernel == 0 for name, kernel in kernels(stripped).items()}

    preserving = quant_api.quantize_apply(
        quant_api.quantize_annotate_model(copy_model(stripped)),
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme(),
    )
    fit(preserving, setup["train"], steps=4, learning_rate=1e-3)
    after = kernels(qat_float_weights(preserving, stripped))
    for name, mask in zeros.items():
        assert sparsity(after[name]) >= 0.79, name
        assert np.all(after[name][mask] == 0), name

    # The plain QAT scheme, same steps: the zeros move (what the preserving scheme prevents).
    plain_qat = quant_api.quantize_model(copy_model(stripped))
    fit(plain_qat, setup["train"], steps=4, learning_rate=1e-3)
    moved = kernels(qat_float_weights(plain_qat, stripped))
    assert sparsity(moved["fc1_input_to_shared"]) < 0.5

    # tfmot_zip.export.tfmot.quantize_zipped(preserve_sparsity=True) applies the same scheme.
    helper = tfmot_support.quantize_zipped(stripped, preserve_sparsity=True)
    for q in (helper, preserving):
        quantizer = q.get_layer("quant_fc1_input_to_shared").quantize_config.weight_quantizer
        assert type(quantizer).__name__ == "PrunePreserveDefault8BitWeightsQuantizer"


def test_prune_zip_layers_of_an_unstripped_model(setup):
    zipped = tfmot_zip.zip_models(*setup["models"], calibration_data=setup["calibration"], sharing=1.0, task_names=list(TASKS))
    fc1 = zipped.get_layer("fc1")
    assert isinstance(fc1, sparsity_api.PrunableLayer)
    pruned = sparsity_api.prune_low_magnitude(
        zipped, pruning_schedule=sparsity_api.ConstantSparsity(0.5, begin_step=0, frequency=1)
    )
    wrapper = pruned.get_layer("prune_low_magnitude_fc1")
    assert wrapper.layer is fc1 and isinstance(wrapper.layer, ZipDense)
    fit(pruned, setup["train"], steps=3, callbacks=[sparsity_api.UpdatePruningStep()])
    stripped = sparsity_api.strip_pruning(pruned)
    for name in ("fc1", "fc2", "head"):
        layer = stripped.get_layer(name)
        assert isinstance(layer, ZipDense)
        # TFMOT prunes each block of the compact kernel (only cells some task reads) to the target.
        for block in layer.kernel_variables():
            assert sparsity(block.numpy()) == pytest.approx(0.5, abs=0.01 + 1 / block.numpy().size), name
    plain = tfmot_zip.strip_zipping(stripped)
    # fc1 reads the raw input, every row shared: its one block is the stripped fc1 block, pruned at the target.
    used = sparsity(plain.get_layer("fc1_input_to_shared").kernel.numpy())
    assert used == pytest.approx(0.5, abs=0.01)
    x = setup["x"]
    for a, b in zip(outputs(stripped, x), outputs(plain, x)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_qat_zip_layers_with_quantize_configs(setup, tmp_path):
    zipped = setup["zipped"]
    with pytest.raises((RuntimeError, ValueError)):  # TFMOT's registry does not know zip layers
        quant_api.quantize_model(zipped)
    qat = tfmot_support.quantize_zipped(zipped)
    assert isinstance(qat.get_layer("quant_fc1").quantize_config, tfmot_support.ZipDenseQuantizeConfig)
    x = setup["x"]
    assert np.isfinite(fit(qat, setup["train"], steps=3, learning_rate=1e-5))  # estimates the ranges
    for q, f in zip(outputs(qat, x), outputs(zipped, x)):
        assert np.mean(np.abs(q - f)) < TOLERANCES["int8"].max_mean_abs
        assert np.mean(q.argmax(-1) == f.argmax(-1)) >= 0.95
    path = tmp_path / "qat_zipped.h5"
    qat.save(path)
    with tfmot_support.zip_quantize_scope():
        loaded = keras.models.load_model(path)
    for a, b in zip(outputs(loaded, x), outputs(qat, x)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # The annotated route, as TFMOT users write it.
    annotated = tfmot_support.quantize_annotate_zipped(zipped)
    with tfmot_support.zip_quantize_scope():
        applied = quant_api.quantize_apply(annotated)
    names = lambda model: [l.name for l in model.layers if not l.name.startswith("quantize_layer")]  # noqa: E731
    assert names(applied) == names(qat)
    assert isinstance(applied.get_layer("quant_head").quantize_config, tfmot_support.ZipDenseQuantizeConfig)


def test_zip_conv_quantize_config_is_per_channel():
    layer = ZipConv2D(task_units=[4, 3], task_input_units=[1, 1], input_capacity=1, kernel_size=3, padding="same")
    layer([keras.Input((8, 8, 1)), keras.Input((8, 8, 1))])
    config = tfmot_support.quantize_config_for(layer)
    assert isinstance(config, tfmot_support.ZipConv2DQuantizeConfig) and config.weight_quantizer.per_axis
    ((weight, _),) = config.get_weights_and_quantizers(layer)
    assert weight is layer.kernel
    restored = tfmot_support.ZipConv2DQuantizeConfig.from_config(config.get_config())
    assert restored == config and restored != tfmot_support.ZipDenseQuantizeConfig()
    with pytest.raises(TypeError, match="ZipDenseQuantizeConfig quantizes ZipDense"):
        tfmot_support.ZipDenseQuantizeConfig().get_weights_and_quantizers(layer)
    with pytest.raises(TypeError, match="ZipDense, ZipConv2D or ZipDepthwiseConv2D"):
        tfmot_support.quantize_config_for(keras.layers.Dense(2))


def test_quantize_zipped_rejects_what_it_cannot_do(setup):
    wrapped = sparsity_api.prune_low_magnitude(copy_model(setup["plain"]))
    with pytest.raises(ValueError, match="strip_pruning"):
        tfmot_support.quantize_zipped(wrapped)
    with pytest.raises(ValueError, match="strip_zipping"):
        tfmot_support.quantize_zipped(setup["zipped"], preserve_sparsity=True)
    assert tfmot_support.has_pruning_wrappers(wrapped) and not tfmot_support.has_pruning_wrappers(setup["plain"])
    assert not tfmot_support.is_quantization_aware(setup["plain"])
