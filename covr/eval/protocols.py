"""Evaluation protocols: how embeddings become scores, per benchmark, named and recorded in the results.

Each reader has a `covr2` protocol (what the public CoVR / CoVR-2 evaluation code computes, so that
numbers sit next to the published ones; ../shared/guide/benchmarks.md, "What the CoVR-2 evaluation
code computes") and, where that differs from covr's own definition, a `covr` protocol:

| reader      | covr2 (default)                                                     | covr                                  |
|-------------|---------------------------------------------------------------------|---------------------------------------|
| webvid_covr | one gallery column per query row: its target's frames pooled with    | one column per unique target video,   |
|             | softmax(row scores / 0.1) (uniform when the list is empty or of      | frames pooled uniformly, token mean;  |
|             | another length), every token re-normalised, token mean; columns of   | the reference video removed           |
|             | the reference video scored -10                                       |                                       |
| cirr        | max over query tokens x target tokens; the reference scored -100     | token means; the reference removed    |
| fashioniq   | token means; the reference scored -10 (reference_in_gallery: CLIP4Cir keeps it) | token means; the reference removed |
| circo       | token means; the reference scored -100                               | token means; the reference removed    |
| cir_jsonl   | -                                                                   | token means; the reference removed    |

The composed-video benchmarks name their reference protocol after the benchmark and offer `unique`:

| reader  | default                                                                  | unique                              |
|---------|--------------------------------------------------------------------------|-------------------------------------|
| egocvr  | `egocvr`: each query ranks its listed egocvr_data.csv rows (a duplicated | the listed rows' distinct clips     |
|         | row is ranked twice); cosine of the token-mean query and the frame-mean  | (each ranked once), otherwise the   |
|         | target; nothing masked; a hit = a row of any target clip in the top K    | same                                |
| tf_covr | `tf_covr`: one column per annotation row (its target_video, repeats      | one column per distinct target      |
|         | kept); token means; columns of the query video scored -100 below their   | video; hits capped at one per       |
|         | own score; R@K counts the top-K columns showing target_video, AP every   | video; otherwise the same           |
|         | column showing a ground truth (both can pass 100% with repeats)          |                                     |

A masked entry (-10 / -100) still ranks, after every real score (all scores of normalised
embeddings lie in [-1, 1]); "removed" takes it out of the ranking. They differ only when K reaches
the end of the ranking, or for a query whose target is its own reference (a self-match).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from covr.similarity import SimilarityMode, check_mode


@dataclass(frozen=True)
class ScoringProtocol:
    """How a task's embeddings are scored (see the module table)."""

    name: str
    similarity: SimilarityMode = "mean"
    frame_weights: Literal["uniform", "scores"] = "uniform"  # "scores": softmax(row scores / 0.1) over stored frames
    renormalise: bool = False  # every token of the frame-pooled target L2-normalised again
    columns: Literal["items", "rows", "listing"] = "items"  # one column per unique item, per query row, or per
    # entry of the benchmark's own gallery list (repeats kept)
    mask_value: float | None = None  # excluded entries: None = removed from the ranking, else scored this
    reproduces: str = ""  # the published numbers this protocol is meant to sit next to
    mask: Literal["set", "subtract"] = "set"  # masked entries get mask_value, or their score + mask_value (TF-CoVR)
    hits: Literal["any", "count"] = "any"  # a query's hit at K is one at most, or the count of correct columns
    cosine: bool = False  # "mean" similarity of L2-normalised pooled query and target (EgoCVR), else dot products

    def describe(self) -> dict[str, Any]:
        """JSON-friendly record for results.json."""
        return asdict(self)


_COVR = ScoringProtocol("covr", reproduces="covr's own definition (not a published table)")
PROTOCOLS: dict[str, dict[str, ScoringProtocol]] = {
    "webvid_covr": {
        "covr2": ScoringProtocol(
            "covr2", "mean", "scores", True, "rows", -10.0,
            "CoVR / CoVR-2 WebVid-CoVR-Test tables (CoVR-2 59.82 R@1; X-Aligner 63.93)",
        ),
        "covr": _COVR,
    },
    "cirr": {
        "covr2": ScoringProtocol("covr2", "max_token_pair", mask_value=-100.0, reproduces="CoVR-2 CIRR zero-shot table"),
        "covr": _COVR,
    },
    "fashioniq": {
        "covr2": ScoringProtocol("covr2", mask_value=-10.0, reproduces="CoVR / CoVR-2 FashionIQ zero-shot tables"),
        "covr": _COVR,
    },
    "circo": {
        "covr2": ScoringProtocol("covr2", mask_value=-100.0, reproduces="CoVR / CoVR-2 / X-Aligner CIRCO zero-shot tables"),
        "covr": _COVR,
    },
    "cir_jsonl": {"covr": _COVR},
    "egocvr": {
        "egocvr": ScoringProtocol(
            "egocvr", columns="listing", cosine=True, reproduces="EgoCVR code (egocvr_retrieval.py): global R@1/5/10, local R@1/2/3"
        ),
        "unique": ScoringProtocol("unique", cosine=True, reproduces="none (the egocvr protocol with each listed clip ranked once)"),
    },
    "tf_covr": {
        "tf_covr": ScoringProtocol(
            "tf_covr", columns="listing", mask_value=-100.0, mask="subtract", hits="count",
            reproduces="TF-CoVR code (finegd_test.py + TestCirco): mAP@5/10/25/50 (headline mAP@50), R@5/10/25/50",
        ),  # fmt: skip
        "unique": ScoringProtocol(
            "unique", mask_value=-100.0, mask="subtract", reproduces="none (the tf_covr protocol on the deduplicated gallery)"
        ),
    },
}
DEFAULT_PROTOCOL = {
    "webvid_covr": "covr2", "cirr": "covr2", "fashioniq": "covr2", "circo": "covr2", "cir_jsonl": "covr",
    "egocvr": "egocvr", "tf_covr": "tf_covr",
}  # fmt: skip


def resolve_protocol(reader: str, name: str | None = None, similarity: str | None = None) -> ScoringProtocol:
    """The named protocol of a reader (None: its default), with `similarity` overriding its mode."""
    table = PROTOCOLS.get(reader, {"covr": _COVR})
    name = name or DEFAULT_PROTOCOL.get(reader, "covr")
    if name not in table:
        raise ValueError(f"benchmark reader {reader!r} has no protocol {name!r}; choose one of {', '.join(table)}")
    protocol = table[name]
    if similarity is not None and similarity != protocol.similarity:
        check_mode(similarity)
        protocol = replace(protocol, similarity=similarity, name=f"{protocol.name}+{similarity}")
    return protocol


def gallery_level(protocol: ScoringProtocol, keep_frames: bool) -> Literal["frames", "tokens", "mean"]:
    """The least a gallery must keep for this protocol: per-frame tokens [G,F,Q,E] (per-row frame
    weights, or dumps), tokens [G,Q,E] (token similarities) or token means [G,E]."""
    if keep_frames or protocol.columns == "rows":
        return "frames"
    return "mean" if protocol.similarity == "mean" else "tokens"
