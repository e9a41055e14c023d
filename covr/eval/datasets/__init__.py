"""Benchmark readers: one file per official layout, all returning `base.Benchmark`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from covr.eval.datasets.base import Benchmark, GalleryFiles, Protocol, Query, RetrievalTask
from covr.eval.datasets.cir_jsonl import load_cir_jsonl
from covr.eval.datasets.circo import load_circo
from covr.eval.datasets.cirr import load_cirr
from covr.eval.datasets.egocvr import load_egocvr
from covr.eval.datasets.fashioniq import load_fashioniq
from covr.eval.datasets.tf_covr import load_tf_covr
from covr.eval.datasets.webvid_covr import load_webvid_covr

READERS: dict[str, Callable[..., Benchmark]] = {
    "cirr": load_cirr,
    "fashioniq": load_fashioniq,
    "circo": load_circo,
    "webvid_covr": load_webvid_covr,  # also Dense-WebVid-CoVR (conf/benchmark/dense_webvid_covr.yaml)
    "egocvr": load_egocvr,
    "tf_covr": load_tf_covr,
    "cir_jsonl": load_cir_jsonl,  # any other composed image or video set in the generic JSONL format
}


def load_benchmark(reader: str, options: Mapping[str, Any], name: str | None = None) -> Benchmark:
    """Call READERS[reader](**options), turning an unknown or missing option into a clear error.

    `name` is passed on to readers that take one (they name their tasks, dump folders and results by it).
    """
    if reader not in READERS:
        raise ValueError(f"unknown benchmark reader {reader!r}; expected one of {sorted(READERS)}")
    function = READERS[reader]
    parameters = inspect.signature(function).parameters
    if name is not None and "name" in parameters:
        options = {"name": name, **options}
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(f"benchmark reader {reader!r} got unknown option(s) {unknown}; it takes {list(parameters)}")
    required = [p for p, v in parameters.items() if v.default is inspect.Parameter.empty and p not in options]
    if required:
        raise ValueError(f"benchmark reader {reader!r} needs option(s) {required}")
    return function(**options)


__all__ = ["READERS", "Benchmark", "GalleryFiles", "Protocol", "Query", "RetrievalTask", "load_benchmark"]
