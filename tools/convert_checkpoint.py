"""Thin entry point: `python tools/convert_checkpoint.py SOURCE OUT` (same as `python -m covr.tools.convert_checkpoint`)."""

import sys

from covr.tools.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
