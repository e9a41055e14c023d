"""Command-line tools that live inside the package (`python -m covr.tools.<name>`)."""
