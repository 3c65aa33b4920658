"""Main job: zip two pre-trained LeNet-300-100 (Fashion-MNIST classes 0-4 vs 5-9).

Usage:
    python examples/zip_lenet300.py [--out out/demo] [--steps 300] [--quick]

Trains the two models once (cached in ~/.cache/tfmot_zip or $TFMOT_ZIP_CACHE), zips them with
MTZ and with the Euclidean baseline at sharing 0.5 and 1.0, retrains lightly, exports TFLite,
and writes report.md, report.json and PNG plots into --out.
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--steps", type=int, default=300, help="joint retraining steps per sharing level")
    parser.add_argument("--selection", default="hungarian", choices=["hungarian", "greedy"])
    parser.add_argument("--quick", action="store_true", help="small run (subsampled training, 100 steps)")
    args = parser.parse_args()

    from tfmot_zip.apps.demo import DemoConfig, run_demo

    config = DemoConfig(out_dir=args.out, retrain_steps=args.steps, selection=args.selection)
    if args.quick:
        config.train_samples, config.epochs, config.retrain_steps, config.eval_every = 6000, 3, 100, 50
        config.calibration_samples = 3000
    run_demo(config)
    print()
    print(open(os.path.join(args.out, "report.md")).read().split("## Sharing per layer")[0])


if __name__ == "__main__":
    main()
