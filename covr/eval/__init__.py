"""Zero-shot evaluation: benchmark readers, chunked top-K, metrics, one evaluator, submissions."""

from covr.eval.evaluator import evaluate_benchmark
from covr.eval.report import evaluate_benchmarks, format_results_table

__all__ = ["evaluate_benchmark", "evaluate_benchmarks", "format_results_table"]
