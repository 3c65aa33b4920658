"""The zip report covers every zip layer the summary lists, depthwise convolutions included."""
import numpy as np
from hypothesis import given, settings, strategies as st

import tfmot_zip
from builders import calib
from tfmot_zip.compat import keras
from tfmot_zip.report.zip_report import zip_report_data

L = keras.layers


def _net(seed, widths, depthwise_at, bn):
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((8, 8, 2), name="img")
    for k, width in enumerate(widths):
        x = L.Conv2D(width, 3, padding="same", name=f"conv{k}")(x)
        if bn:
            x = L.BatchNormalization(name=f"bn{k}")(x)
        x = L.ReLU(name=f"relu{k}")(x)
        if k in depthwise_at:
            x = L.DepthwiseConv2D(3, padding="same", name=f"dw{k}")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name=f"net{seed}")


@settings(max_examples=5, deadline=None)
@given(widths=st.lists(st.tuples(st.integers(2, 6), st.integers(2, 6)), min_size=1, max_size=3),
       depthwise=st.sets(st.integers(0, 2), min_size=1), sharing=st.sampled_from([0.5, 1.0]), bn=st.booleans())
def test_report_lists_every_zip_layer_with_its_physical_units(widths, depthwise, sharing, bn):
    depthwise = {k % len(widths) for k in depthwise}
    models = [_net(m + 1, [w[m] for w in widths], depthwise, bn) for m in range(2)]
    rng = np.random.default_rng(0)
    data = [calib(rng, 40, (8, 8, 2)) for _ in models]
    zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=sharing, progress=False)
    report = zip_report_data(zipped)
    names = [entry.name for entry in tfmot_zip.zip_summary(zipped).layers]
    assert [layer["name"] for layer in report["layers"]] == names
    assert {f"dw{k}" for k in depthwise} <= set(names)
    for entry in report["layers"]:
        layer = zipped.get_layer(entry["name"])
        used = set()
        for t in range(2):  # brute force: the physical units some task writes
            used |= {int(u) for u in layer.get_maps(t)[1]}
        assert entry["physical_units"] == len(used)


@settings(max_examples=30, deadline=None)
@given(layers=st.lists(st.tuples(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
                                 st.lists(st.integers(1, 100_000), min_size=2, max_size=3), st.booleans()),
                       min_size=1, max_size=6))
def test_summary_table_columns_stay_apart_for_any_name_length(layers):
    """Long layer names (keras.applications' run to 25 characters) ran into the widths column."""
    from tfmot_zip.zipping.report import LayerSummary, ZipReport

    summaries = [LayerSummary(name, "dense", widths, 1, 10, 5, 0.5, head) for name, widths, head in layers]
    lines = str(ZipReport(["a", "b"], summaries, 100, 60)).splitlines()
    header, rows = lines[0], lines[2:2 + len(layers)]
    widths_at, shared_end = header.index("widths"), header.index("shared") + len("shared")
    for row, (name, widths, head) in zip(rows, layers):
        assert row[:widths_at].rstrip() == name and row[len(name):widths_at].startswith("  ")
        cell = "/".join(map(str, widths)) + (" (head)" if head else "")
        assert row[widths_at:].startswith(cell) and row[widths_at + len(cell):shared_end - 1].strip() == ""
        assert row[:shared_end].endswith("1") and len(row) == len(header)
