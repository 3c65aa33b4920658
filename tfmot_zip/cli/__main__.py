"""``python -m tfmot_zip.cli``."""
import sys

from tfmot_zip.cli.parser import main

sys.exit(main())
