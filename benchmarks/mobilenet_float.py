"""The trained zoo MobileNetV2 pair zipped (MTZ, sharing 0.5 and 1.0, 1,000 calibration images per task),
stripped, exported to float TFLite and verified in LiteRT against Keras with the default tolerance
(``verify_tflite`` raises beyond it) on 500 test images per task; prints the stripped model's largest
difference from the zipped one and the file's largest error.

Run:  nice python -m benchmarks.mobilenet_float
"""
from __future__ import annotations

import numpy as np

import tfmot_zip
from tfmot_zip.export import export_tflite, verify_tflite


def main() -> None:
    from benchmarks.refit import load_pair

    tasks, trained = load_pair("mobilenet_v2", "split")
    models = [t.model for t in trained]
    calibration = [t.x_train[:1000] for t in tasks]
    sample = [t.x_test[:500] for t in tasks]
    for sharing in (0.5, 1.0):
        zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=sharing, progress=False)
        stripped = tfmot_zip.strip_zipping(zipped)
        strip_diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(zipped(sample), stripped(sample)))
        report = verify_tflite(export_tflite(stripped), stripped, sample)
        worst = max(r["max_abs_error"] for r in report.values())
        print(f"sharing {sharing}: stripped vs zipped {strip_diff:.2e}; float TFLite verified, signatures "
              f"{sorted(report)}, largest error {worst:.2e}")


if __name__ == "__main__":
    main()
