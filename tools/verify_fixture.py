"""Thin entry point: `python tools/verify_fixture.py PATH` (same as `python -m covr.tools.verify_fixture`)."""

import sys

from covr.tools.verify_fixture import main

if __name__ == "__main__":
    sys.exit(main())
