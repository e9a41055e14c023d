"""Command-line tools, one module each, installed as commands by pyproject's [project.scripts].

Convention: a user tool is `covr/tools/<name>.py` with `main(argv: list[str] | None = None) -> int`
(the exit status), run as `covr-<name with dashes>` or `python -m covr.tools.<name>`, and needs
nothing outside the package (a tool that reads covr's conf/ says so and has another way in).
`tools/` at the repository root holds only benchmark and ablation scripts, which are not part of
the library and run from a checkout.
"""

import argparse
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help prints the module docstring as written (its usage examples) and every option's real
    default, read from the parser (options without one, or off by default, show none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == [] or action.default == argparse.SUPPRESS
        if unset or "%(default)" in text or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def report_error(error: BaseException) -> int:
    """Print a mistake the user can fix as one line on stderr; returns the exit status for it, 2
    (argparse's for bad arguments, train.py's for bad values; 1 means the tool ran and found a problem)."""
    print(f"error: {error}", file=sys.stderr)
    return 2
