"""Zip two LeNet-5, prune to 80%, quantize to int8, ship ONE TFLite file with a signature per task.

Usage:
    python examples/zip_prune_quantize_tflite.py [--out out/tflite_chain] [--quick] [--int8 ptq|qat]

Fashion-MNIST classes 0-4 vs 5-9 (source models trained once and cached in ~/.cache/tfmot_zip or
$TFMOT_ZIP_CACHE) -> tfmot_zip.zip_models(sharing=1.0) -> joint retraining -> strip_zipping ->
TFMOT prune_low_magnitude (PolynomialDecay to 80%) -> strip_pruning -> int8 -> export_tflite.
Every task's accuracy is measured through the LiteRT interpreter on its full test split; sizes and
latencies are compared with the two separate models side by side. Writes report.md, report.json
and the .tflite files into --out. The work is done by tfmot_zip.apps.tflite_chain.run(config).
"""
import argparse
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/tflite_chain", help="output folder (default: out/tflite_chain)")
    parser.add_argument("--quick", action="store_true", help="shorter retraining/pruning (about 1-2 minutes)")
    parser.add_argument("--int8", choices=["ptq", "qat"], default="ptq",
                        help="post-training int8 (default) or prune-preserving quantization-aware training")
    args = parser.parse_args()

    from tfmot_zip.compat import tf

    tf.get_logger().setLevel("ERROR")
    from tfmot_zip.apps.tflite_chain import ChainConfig, quick_config, run

    config = quick_config(out_dir=args.out, int8=args.int8) if args.quick else ChainConfig(out_dir=args.out, int8=args.int8)
    report = run(config)
    print()
    print(open(os.path.join(args.out, "report.md")).read())
    missed = [k for k, v in report["targets"].items() if not v["met"]]
    print("all targets met" if not missed else f"targets missed: {missed}")


if __name__ == "__main__":
    main()
