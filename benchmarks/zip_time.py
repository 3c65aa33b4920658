"""Zipping time (Hessians + costs + selection + updates + BatchNorm re-estimation, no retraining).

Usage:
    python benchmarks/zip_time.py lenet5 10000      # Fashion-MNIST classes 0-4 vs 5-9, sharing 1.0
    python benchmarks/zip_time.py resnet20 1000

Prints wall and CPU seconds of one ``zip_models`` call in a fresh process (TensorFlow start-up
excluded, first-call tracing included) and the seconds spent per layer.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    import tfmot_zip
    from tfmot_zip import data, training
    from tfmot_zip.apps import zoo

    arch = sys.argv[1] if len(sys.argv) > 1 else "lenet5"
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    tasks = [data.make_task("classes_0_4"), data.make_task("classes_5_9")]
    models = [zoo.train_on_task(arch, t, seed=0).model for t in tasks]
    calibration = [t.x_train[:samples] for t in tasks]
    cpu, wall = time.process_time(), time.time()
    zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=1.0)
    wall, cpu = time.time() - wall, time.process_time() - cpu
    accuracy = training.evaluate_tasks(zipped, [t.test for t in tasks])
    print(f"{arch}: {samples} calibration images per task, sharing 1.0: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"({os.cpu_count()} cores); accuracy right after zipping {accuracy[0]:.2f} / {accuracy[1]:.2f}")
    for layer in tfmot_zip.zip_summary(zipped).layers:
        print(f"  {layer.name:<28}{layer.seconds or 0.0:6.2f} s")


if __name__ == "__main__":
    main()
