"""Command-line tools, one module each, installed as commands by pyproject's [project.scripts].

Convention: a user tool is `covr/tools/<name>.py` with `main(argv: list[str] | None = None) -> int`
(the exit status), run as `covr-<name with dashes>` or `python -m covr.tools.<name>`, and needs
nothing outside the package (a tool that reads covr's conf/ says so and has another way in).
`tools/` at the repository root holds only benchmark and ablation scripts, which are not part of
the library and run from a checkout.
"""

import argparse
import statistics
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


def mean_sd(values: list[float], digits: int = 2) -> str:
    """"mean ± sample standard deviation" of repeated runs (one value: itself; none: empty), for result tables."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else ""
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def report_error(error: BaseException) -> int:
    """Print a mistake the user can fix as one line on stderr; returns the exit status for it, 2
    (argparse's for bad arguments, train.py's for bad values; 1 means the tool ran and found a problem)."""
    print(f"error: {error}", file=sys.stderr)
    return 2


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """--reader / --option: the queries of any benchmark, read exactly as the evaluator reads them."""
    parser.add_argument("--reader", required=True, help="benchmark reader: cirr, fashioniq, circo, webvid_covr, egocvr, tf_covr, cir_jsonl")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="a reader option as in conf/benchmark/*.yaml (root=..., split=val, annotation=...), repeatable; "
        "values are read as JSON when they parse (true, 3, [\"dress\"]), else as text",
    )  # fmt: skip


def benchmark_queries(reader: str, options: list[str]) -> list:
    """The queries of every task of a benchmark (each query id once), from --reader / --option."""
    import json

    from covr.eval.datasets import load_benchmark

    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {option!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    benchmark = load_benchmark(reader, parsed)
    queries = {}
    for task in benchmark.tasks:
        for q in task.queries:
            queries.setdefault(q.id, q)
    return list(queries.values())
