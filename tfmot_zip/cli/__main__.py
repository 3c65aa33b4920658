"""``python -m tfmot_zip.cli``."""
import sys

from tfmot_zip.cli.main import main

sys.exit(main())
