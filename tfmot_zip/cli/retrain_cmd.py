"""``tfmot-zip retrain``: joint retraining of a zipped model (one batch of every task per step)."""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from tfmot_zip.cli.console import Console
from tfmot_zip.cli.errors import EXIT_OK, UsageError
from tfmot_zip.cli.files import check_model_path, check_output_dir, check_output_file, file_size, load_model_file, npz_files
from tfmot_zip.cli.inputs import FASHION_MNIST as _FM
from tfmot_zip.cli.inputs import accuracy_of, check_inputs_fit, check_labels_fit, load_specs, per_model_specs

__all__ = ["NAME", "HELP", "DESCRIPTION", "EXAMPLE", "add_arguments", "progress_callback", "run"]

NAME = "retrain"
HELP = "jointly retrain a zipped model"
DESCRIPTION = "Joint retraining: each step one batch of every task, summed losses (shared weights get every task's gradient)."
EXAMPLE = (
    "tfmot-zip retrain zipped.keras \\\n"
    f"    --data '{_FM}:train?classes=0,1,2,3,4' '{_FM}:train?classes=5,6,7,8,9' \\\n"
    "    --steps 300 --lr 1e-4 --out retrained.keras"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``retrain``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> parser.parse_args(["z.keras", "--data", "d.npz", "--out", "r.keras"]).steps
        300
    """
    parser.add_argument("model", metavar="ZIPPED.keras")
    parser.add_argument("--data", nargs="+", required=True, metavar="SPEC",
                        help="labelled training data, one spec per task (or one for all)")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per task per step (default 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", nargs="+", metavar="SPEC", help="labelled test data per task: accuracy before/after")
    parser.add_argument("--out", required=True, metavar="FILE.keras")
    parser.add_argument("--report", metavar="DIR", help="write a report of the retrained model into DIR")


def progress_callback(console: Console, steps: int) -> Any:
    """A Keras callback that draws a progress bar of ``steps`` training steps with the loss.

    Call its ``close()`` when training ends.

    Example:
        >>> callback = progress_callback(Console(quiet=True), steps=3)
        >>> callback.on_train_batch_end(0, {"loss": 0.5})
        >>> callback.close()
    """
    from tfmot_zip.compat import keras

    class _Bar(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.bar = console.bar(total=steps, desc="retraining", unit="step")

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

        def close(self) -> None:
            self.bar.close()

    return _Bar()


def _check_settings(args: argparse.Namespace) -> None:
    if args.steps < 0:
        raise UsageError(f"--steps must be a non-negative integer. Received: {args.steps}")
    if not (args.lr > 0 and np.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number (e.g. 1e-4). Received: {args.lr}")
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be a positive integer. Received: {args.batch_size}")
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer. Received: {args.seed}")


def run(args: argparse.Namespace, console: Console) -> int:
    """Runs ``retrain``; returns the exit code.

    Example:
        >>> from tfmot_zip.cli.parser import main
        >>> main(["retrain", "missing.keras", "--data", "d.npz", "--out", "r.keras", "-q"])
        2
    """
    path = check_model_path(args.model, "zipped model")
    _check_settings(args)
    from tfmot_zip.data.specs import parse_data_spec

    specs = [parse_data_spec(s) for s in args.data] + [parse_data_spec(s) for s in args.eval or []]
    out = check_output_file(args.out, (".keras",), "--out", inputs=[path] + npz_files(specs))
    report_dir = check_output_dir(args.report, "--report") if args.report else None

    console.log(f"loading {path}")
    from tfmot_zip.model.copying import copy_model
    from tfmot_zip.model.layers import zip_layers

    model = load_model_file(path, "zipped model", log=console.log)
    n_tasks = len(model.outputs)
    train_specs = per_model_specs(args.data, n_tasks, "--data", "tasks")
    eval_specs = per_model_specs(args.eval, n_tasks, "--eval", "tasks") if args.eval else None
    if not zip_layers(model):
        console.log(f"note: {path} has no zip layers; retraining it as a plain multi-output model")
    if len(model.inputs) != n_tasks:
        raise UsageError(
            f"Model {str(path)!r} has {len(model.inputs)} input(s) for {n_tasks} tasks; joint retraining feeds each "
            "task its own batch, so it needs one input per task (zip without --single-input to retrain; the "
            "stripped model can still share one input)."
        )
    train = load_specs(train_specs, args, need_labels=True, console=console)
    tests = load_specs(eval_specs, args, need_labels=True, console=console) if eval_specs else None
    for flag, data in (("--data", train), ("--eval", tests or [])):
        check_inputs_fit(model, data, flag, list(range(n_tasks)))
        check_labels_fit(model, data, flag)
    for d in train:
        if len(d) < args.batch_size:
            raise UsageError(
                f"--data {d.spec.text!r} has {len(d)} examples, fewer than --batch-size {args.batch_size}; "
                "lower --batch-size or pass more examples."
            )
    from tfmot_zip import training
    from tfmot_zip.io import atomic_save_model

    before = accuracy_of(model, tests, console, "before retraining") if tests is not None else None
    training.compile_multitask(model, args.lr)
    bar = progress_callback(console, args.steps)
    try:
        training.retrain(model, [(d.x, d.y) for d in train], args.steps, args.lr, batch_size=args.batch_size, seed=args.seed,
                         callbacks=[bar])
    finally:
        bar.close()
    after = accuracy_of(model, tests, console, "after retraining") if tests is not None else None
    console.log(f"saving {out}")
    atomic_save_model(copy_model(model), out)  # no optimizer slots: retrain recompiles anyway; the file stays small
    for name, b, a in zip(model.output_names, before or [], after or []):
        print(f"{name}: accuracy {b:.2f}% -> {a:.2f}% after {args.steps} steps")
    print(f"wrote {out} ({file_size(out):,} bytes)")
    if report_dir is not None and zip_layers(model):
        from tfmot_zip.report.zip_report import write_zip_report

        result = write_zip_report(
            model, report_dir, accuracy_before=None if before is None else {"zipped": before},
            accuracy_after=None if after is None else {f"retrained {args.steps} steps": after},
            sizes={"retrained .keras": file_size(out)},
        )
        print(f"wrote report {result['files']['markdown']}")
    return EXIT_OK
