"""Parameters of the zipped model against the stripped one, for every zoo pair.

Two zoo models of one architecture (random weights: the sizes do not depend on training), 48 random
calibration images of the zoo's input shape, ``zip_models(..., method="mtz")`` at sharing 1.0 and
0.5; prints ``count_params()`` of the originals, the zipped model and ``strip_zipping(zipped)``, and
their ratio as a markdown table (docs/ZIP_COST.md, "The zipped model's size").

Run:  python -m benchmarks.zipped_size [--archs lenet5 resnet20 ...] [--out out/zipped_size.json]
"""
from __future__ import annotations

import argparse

import numpy as np

SHARINGS = (1.0, 0.5)


def measure(arch: str, samples: int = 48) -> list[dict]:
    """Rows for one architecture: one per sharing."""
    import tfmot_zip
    from tfmot_zip.apps.zoo import build_model

    a, b = build_model(arch, name=f"{arch}_a"), build_model(arch, name=f"{arch}_b")
    rng = np.random.default_rng(0)
    calibration = tuple(rng.random((samples,) + tuple(a.input_shape[1:])).astype("float32") for _ in range(2))
    rows = []
    for sharing in SHARINGS:
        zipped = tfmot_zip.zip_models(a, b, calibration_data=calibration, sharing=sharing, progress=False, method="mtz")
        stripped = tfmot_zip.strip_zipping(zipped).count_params()
        rows.append({"arch": arch, "sharing": sharing, "originals": a.count_params() + b.count_params(),
                     "zipped": zipped.count_params(), "stripped": stripped,
                     "zipped_over_stripped": round(zipped.count_params() / stripped, 3)})
    return rows


def main() -> None:
    from tfmot_zip.apps.zoo import ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ["lenet_300_100", "lenet5", "lenet5_caffe", "small_vgg", "resnet20", "mobilenet_v2"]
    parser.add_argument("--archs", nargs="+", default=default, choices=sorted(ARCHITECTURES))
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    print("| pair | sharing | originals | zipped | stripped | zipped / stripped |\n|---|---|---|---|---|---|", flush=True)
    rows = []
    for arch in args.archs:
        for r in measure(arch):
            rows.append(r)
            print(f"| {arch} | {r['sharing']} | {r['originals']:,} | {r['zipped']:,} | {r['stripped']:,} | "
                  f"{r['zipped_over_stripped']:.3f} |", flush=True)
    if args.out:
        from tfmot_zip.io import atomic_write_json, versions

        atomic_write_json(args.out, {"rows": rows, "versions": versions()})


if __name__ == "__main__":
    main()
