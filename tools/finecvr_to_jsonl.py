"""Thin entry point: `python tools/finecvr_to_jsonl.py ...` (same as `python -m covr.tools.finecvr_to_jsonl`)."""

import sys

from covr.tools.finecvr_to_jsonl import main

if __name__ == "__main__":
    sys.exit(main())
