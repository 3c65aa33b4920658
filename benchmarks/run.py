"""The benchmark: where MTZ stands against its baselines on Fashion-MNIST (one command).

Usage:
    .venv/bin/python benchmarks/run.py [--quick] [--out out/bench] [--img-dir DIR]
                                       [--resnet | --no-resnet] [--scenario NAME ...]

Runs scenarios x strategies x sharing fractions (zipping, light joint retraining), the unzipped
originals trained on as a control, a fully shared network trained from scratch, and the search
for the largest sharing MTZ reaches within 0.5 point per task; writes ``results.json`` (atomic,
after every scenario, with versions and machine), ``results.md`` and PNG plots into ``--out``.
Originals are trained once and cached (``~/.cache/tfmot_zip``). No figure is asserted: read them.
Run it under ``nice -n 10`` on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its native start-up logs (written to fd 2 before absl is set up) muted."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tfmot_zip.compat  # noqa: F401  (imports tensorflow and tf_keras)
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def rerender(results_json: str, out: str | None, img_dir: str | None) -> int:
    """Writes results.md and the plots of an earlier run (measures nothing)."""
    import json

    _import_tensorflow_quietly()  # importing tfmot_zip imports TensorFlow

    from benchmarks import report
    from tfmot_zip.io import atomic_write_text, check_writable_dir

    results = json.loads(Path(results_json).read_text(encoding="utf-8"))
    out_dir = check_writable_dir(out or Path(results_json).parent)
    images = check_writable_dir(img_dir or out_dir)
    prefix = os.path.relpath(images, out_dir) + "/" if images.resolve() != out_dir.resolve() else ""
    written = report.write_plots(results, images)
    atomic_write_text(out_dir / "results.md", report.render_markdown(results, img_prefix=prefix))
    print(f"wrote {out_dir / 'results.md'} and {len(written)} plots in {images}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few-minute run: fewer fractions, strategies and steps")
    parser.add_argument("--out", default=None, help="output folder (default out/bench, or out/bench-quick with --quick)")
    parser.add_argument("--img-dir", default=None, help="folder of the PNGs (default: --out); docs/img for docs/RESULTS.md")
    resnet = parser.add_mutually_exclusive_group()
    resnet.add_argument("--resnet", dest="resnet", action="store_true", default=None,
                        help="include the ResNet-20 pair (default: on when zip_models zips a tiny ResNet-20; off in --quick)")
    resnet.add_argument("--no-resnet", dest="resnet", action="store_false", help="skip the ResNet-20 pair")
    parser.add_argument("--scenario", action="append", default=None, metavar="NAME", help="run only this scenario (repeatable)")
    parser.add_argument("--from-results", default=None, metavar="JSON",
                        help="measure nothing: re-render results.md and the PNGs from an earlier results.json")
    args = parser.parse_args(argv)
    if args.from_results:
        return rerender(args.from_results, args.out, args.img_dir)

    import logging

    _import_tensorflow_quietly()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from benchmarks import measure, report
    from benchmarks.scenarios import full_config, quick_config, select_scenarios
    from tfmot_zip.io import atomic_write_json, atomic_write_text, check_writable_dir

    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)

    probe = None
    use_resnet = args.resnet
    if use_resnet or (use_resnet is None and not args.quick):  # --quick skips ResNet-20 unless asked
        log("probing ResNet-20 support of zip_models (two tiny untrained ResNet-20)")
        probe = measure.probe_resnet()
        log(f"    {'supported' if probe['supported'] else 'not supported: ' + str(probe['error'])} ({probe['seconds']} s)")
        if use_resnet is None:
            use_resnet = probe["supported"]
        elif not probe["supported"]:
            log("    --resnet given: running the ResNet-20 pair anyway (its failure will stop the run)")
    config = (quick_config if args.quick else full_config)(resnet=bool(use_resnet))
    if args.out:
        config.out_dir = args.out
    if args.img_dir:
        config.img_dir = args.img_dir
    if args.scenario:
        select_scenarios(config, args.scenario)
    out = check_writable_dir(config.out_dir)
    img_dir = config.img_dir or str(out)
    img_prefix = os.path.relpath(img_dir, out) + "/" if Path(img_dir).resolve() != out.resolve() else ""
    log(f"{'quick' if config.quick else 'full'} run: {', '.join(s.name for s in config.scenarios)} -> {out}")

    def save(results: dict) -> None:
        atomic_write_json(out / "results.json", results)
        report.write_plots(results, img_dir)
        atomic_write_text(out / "results.md", report.render_markdown(results, img_prefix=img_prefix))

    results = measure.run_benchmark(config, log=log, on_update=save, resnet_probe=probe)
    text = report.render_markdown(results, img_prefix=img_prefix)
    print()
    sections = text.split("\n## ")
    print("## " + sections[1] if len(sections) > 1 else text)  # the summary and the zip-time table
    log(f"wrote {out / 'results.json'}, {out / 'results.md'} and plots in {img_dir} ({results['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
