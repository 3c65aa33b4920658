#!/usr/bin/env bash
# Regenerates docs/img/zip_report_example.png and docs/zip_report_example.md from a real run of
# the command line on the cached LeNet-300-100 pair (Fashion-MNIST classes 0-4 and 5-9; trained
# once by tfmot_zip.apps.zoo, then loaded from the cache).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=.venv/bin/python
OUT=out/zip_report_example
FM=local_fashion_mnist
mkdir -p "$OUT" docs/img
read -r A B < <("$PY" -c '
import os; os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from tfmot_zip.apps import zoo
print(*(zoo.train_on_task("lenet_300_100", t, seed=0).path for t in ("classes_0_4", "classes_5_9")))' 2>/dev/null)
COMMAND=(.venv/bin/tfmot-zip zip "$A" "$B"
  --calibration "$FM:train[:10000]?classes=0,1,2,3,4" "$FM:train[:10000]?classes=5,6,7,8,9"
  --eval "$FM:test?classes=0,1,2,3,4" "$FM:test?classes=5,6,7,8,9"
  --sharing 0.5 --out "$OUT/zipped.keras" --report "$OUT/report")
"${COMMAND[@]}" | tee "$OUT/stdout.txt"
cp "$OUT/report/zip_report.png" docs/img/zip_report_example.png
{
  echo "# Example zip report"
  echo
  echo "Written by \`scripts/make_zip_report_example.sh\`: the two cached LeNet-300-100 models"
  echo "(Fashion-MNIST classes 0-4 and 5-9) zipped at sharing 0.5 with MTZ and Hungarian pairing, no"
  echo "retraining, by"
  echo
  echo '```bash'
  echo "tfmot-zip zip lenet_300_100_classes_0_4.keras lenet_300_100_classes_5_9.keras \\"
  echo "    --calibration '$FM:train[:10000]?classes=0,1,2,3,4' '$FM:train[:10000]?classes=5,6,7,8,9' \\"
  echo "    --eval '$FM:test?classes=0,1,2,3,4' '$FM:test?classes=5,6,7,8,9' \\"
  echo "    --sharing 0.5 --out zipped.keras --report report/"
  echo '```'
  echo
  echo "The report folder holds \`zip_report.md\` (below), \`zip_report.json\`, \`zip_report.png\`,"
  echo "\`sharing.png\` and \`accuracy.png\`. Times are from a 2-core machine shared with other jobs."
  echo
  sed -e 's#](zip_report.png)#](img/zip_report_example.png)#' -e 's/^# Zip report/## Zip report/' -e 's/^## /### /' \
      -e 's/^### Zip report/## Zip report/' "$OUT/report/zip_report.md"
} > docs/zip_report_example.md
echo "wrote docs/img/zip_report_example.png and docs/zip_report_example.md"
