"""Thin entry point: `python tools/import_embeddings.py ...` (same as `python -m covr.tools.import_embeddings`)."""

import sys

from covr.tools.import_embeddings import main

if __name__ == "__main__":
    sys.exit(main())
