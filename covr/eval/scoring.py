"""From embeddings to metrics under a protocol: gallery columns, top-K ranking, metrics.

Pure tensor code (no files, no model), so every protocol can be checked against an independent
transcription on synthetic embeddings (tests/eval/test_eval_protocols.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from covr.eval import metrics as M
from covr.eval.datasets.base import Protocol, Query
from covr.eval.encoding import ItemEmbeddings, reduce_frames
from covr.eval.protocols import ScoringProtocol
from covr.eval.topk import Rescorer, rank_candidates, topk_faiss, topk_similarity, topk_within
from covr.similarity import pool_frames, pool_tokens, score_weights

Rankings = list[list[str]]
ROW_CHUNK = 256  # query rows pooled at a time ("rows" columns): bounds the [rows, F, Q, E] gather


@dataclass
class Columns:
    """What the queries are ranked against: column keys, the gallery item each shows, embeddings."""

    ids: list[str]  # item ids ("items"), or the query id whose target the column is ("rows")
    items: list[str]
    embeddings: Tensor  # [C, E] or [C, Q, E]


@dataclass
class TaskRanking:
    """Top-K column keys and scores per query, and (CIRR) each query's subset order."""

    ranked: Rankings
    scores: list[list[float]]
    subset_ranked: Rankings | None
    columns: Columns


def row_weights(query: Query, mask: Tensor, protocol: ScoringProtocol) -> Tensor:
    """Frame weights [F] of a query row's target: softmax(scores / 0.1) over its stored frames when
    the protocol uses scores and the list has one score per stored frame, else uniform."""
    n = int(mask.sum())
    scores = query.frame_scores
    if protocol.frame_weights == "scores" and scores and len(scores) == n:
        padded = torch.zeros(mask.shape[0])
        padded[:n] = torch.tensor(scores, dtype=torch.float32)
        return score_weights(padded[None], mask[None])[0]
    return mask.float() / max(n, 1)


def _cosine(protocol: ScoringProtocol) -> bool:
    return protocol.cosine and protocol.similarity == "mean"


def build_columns(
    protocol: ScoringProtocol, queries: Sequence[Query], gallery: ItemEmbeddings, listing: Sequence[tuple[str, str]] | None = None
) -> Columns:
    """Gallery columns of a protocol: one per item, one per entry of the benchmark's `listing`
    (repeated items repeated; entries whose item is not in the gallery left out), or one per query
    row (its target, pooled with the row's frame weights); re-normalised per token when the
    protocol says so, token-mean pooled for "mean" similarity (and L2-normalised for cosine)."""
    keep_tokens = protocol.similarity != "mean"
    if protocol.columns in ("items", "listing"):
        embeddings = gallery.embeddings
        if gallery.level == "frames":
            level = "tokens" if keep_tokens else "mean"
            embeddings = reduce_frames(embeddings.float(), gallery.frame_mask, level, protocol.renormalise)
        if _cosine(protocol):
            embeddings = F.normalize(pool_tokens(embeddings.float()), dim=-1)
        if protocol.columns == "items":
            return Columns(list(gallery.ids), list(gallery.ids), embeddings)
        if listing is None:
            raise ValueError(f"protocol {protocol.name!r} ranks the benchmark's gallery list, but this task has none")
        index = {item: i for i, item in enumerate(gallery.ids)}
        entries = [(key, item) for key, item in listing if item in index]
        rows = torch.tensor([index[item] for _, item in entries], dtype=torch.long)
        return Columns([key for key, _ in entries], [item for _, item in entries], embeddings[rows])
    if gallery.level != "frames":
        raise ValueError(f"protocol {protocol.name!r} pools each row's target frames: the gallery must keep level 'frames'")
    index = {item: i for i, item in enumerate(gallery.ids)}
    parts = []
    for start in range(0, len(queries), ROW_CHUNK):
        chunk = queries[start : start + ROW_CHUNK]
        items = torch.tensor([index[q.target] for q in chunk], dtype=torch.long)
        mask = gallery.frame_mask[items]  # [R, F]
        weights = torch.stack([row_weights(q, m, protocol) for q, m in zip(chunk, mask)])
        pooled = pool_frames(gallery.embeddings[items].float(), weights, mask)  # [R, Q, E]
        if protocol.renormalise:
            pooled = F.normalize(pooled, dim=-1)
        parts.append(pooled if keep_tokens else pool_tokens(pooled))
    return Columns([q.id for q in queries], [q.target for q in queries], torch.cat(parts))


def targets_of(protocol: ScoringProtocol, queries: Sequence[Query]) -> tuple[list[str | None], list[tuple[str, ...]]]:
    """(single target, every correct column) per query: the own column for "rows" columns."""
    if protocol.columns == "rows":
        return [q.id for q in queries], [(q.id,) for q in queries]
    return [q.target for q in queries], [q.correct() for q in queries]


def candidate_columns(
    protocol: ScoringProtocol, queries: Sequence[Query], columns: Columns, listing: Sequence[tuple[str, str]] | None
) -> list[list[int]] | None:
    """Per query, the column indices it may rank (sorted), from its `candidates` (keys of the task's
    listing, or item ids without one); None when no query restricts its gallery."""
    if all(q.candidates is None for q in queries):
        return None
    if protocol.columns == "rows":
        raise ValueError(f"protocol {protocol.name!r} has one column per query row: it cannot restrict a query's gallery")
    listed = protocol.columns == "listing"
    column_of = {key: c for c, key in enumerate(columns.ids if listed else columns.items)}
    # "items" columns: a candidate names a listing entry, whose item is the column (each item once)
    item_of_key = dict(listing) if listing is not None and not listed else {}
    out = []
    for q in queries:
        keys = columns.ids if q.candidates is None else [item_of_key.get(x, x) for x in q.candidates]
        out.append(sorted({column_of[x] for x in keys if x in column_of}))
    return out


def rank_task(
    protocol: ScoringProtocol, queries: Sequence[Query], query_tokens: Tensor, columns: Columns, k: int, subsets: bool,
    backend: str = "exact", candidates: list[list[int]] | None = None, rescore: Rescorer | None = None,
) -> TaskRanking:
    """Top-k columns per query (among its `candidates` columns when given; columns of its `exclude`
    items masked or removed, per the protocol); `rescore` turns the protocol's scores into final
    ones (covr.eval.rerank: SoFT, score fusion) over the whole gallery, before masking."""
    by_item: dict[str, list[int]] = {}
    for c, item in enumerate(columns.items):
        by_item.setdefault(item, []).append(c)
    exclude = [[c for x in q.exclude for c in by_item.get(x, ())] for q in queries]
    mask_value = float("-inf") if protocol.mask_value is None else protocol.mask_value
    device = query_tokens.device
    if _cosine(protocol):
        query_tokens = F.normalize(pool_tokens(query_tokens), dim=-1)  # [Bq, E]
    if candidates is not None:
        if backend != "exact":
            raise ValueError(f"per-query galleries (protocol {protocol.name!r}) are ranked exactly; use backend 'exact'")
        values, indices = topk_within(
            query_tokens, columns.embeddings, candidates, k, protocol.similarity, exclude, mask_value, protocol.mask, rescore=rescore
        )
    elif backend == "exact":
        values, indices = topk_similarity(
            query_tokens, columns.embeddings, k, protocol.similarity, exclude, mask_value=mask_value, mask_mode=protocol.mask,
            rescore=rescore,
        )  # fmt: skip
    elif backend.split(":")[0] == "faiss":  # "faiss" = exact flat, "faiss:IVF4096,Flat" = approximate
        if rescore is not None:
            raise ValueError("re-ranking and score fusion re-score the whole gallery exactly; use backend 'exact'")
        if protocol.similarity != "mean":
            raise ValueError(f"the faiss backend supports similarity 'mean' only; protocol {protocol.name!r} uses {protocol.similarity!r}")
        if protocol.mask != "set":
            raise ValueError(f"the faiss backend sets masked scores; protocol {protocol.name!r} shifts them: use backend 'exact'")
        factory = backend.partition(":")[2] or "Flat"
        values, indices = topk_faiss(query_tokens, columns.embeddings, k, exclude, index_factory=factory, mask_value=mask_value)
    else:
        raise ValueError(f"unknown top-k backend {backend!r}; expected 'exact', 'faiss' or 'faiss:<index factory>'")
    ranked, scores = [], []
    for row_values, row_indices in zip(values.cpu().tolist(), indices.cpu().tolist()):
        kept = [(v, i) for v, i in zip(row_values, row_indices) if i >= 0]
        ranked.append([columns.ids[i] for _, i in kept])
        scores.append([v for v, _ in kept])
    subset_ranked = None
    if subsets:
        index_of = {key: c for c, key in enumerate(columns.ids)}
        members = [[index_of[m] for m in (q.subset or ()) if m in index_of and m != q.reference] for q in queries]
        order = rank_candidates(query_tokens.to(device), columns.embeddings, members, protocol.similarity, rescore)
        subset_ranked = [[columns.ids[i] for i in row] for row in order]
    return TaskRanking(ranked, scores, subset_ranked, columns)


def task_metrics(
    metrics: Protocol, scoring: ScoringProtocol, queries: Sequence[Query], ranked: Rankings, subset_ranked: Rankings | None,
    item_of: dict[str, str] | None = None,
) -> dict[str, float]:
    """Every metric of `metrics` over these queries (same order as the rankings of column keys;
    `item_of` maps a column key to its item where they differ: listing columns)."""
    out: dict[str, float] = {}
    targets, correct = targets_of(scoring, queries)
    lists = [[item_of[c] for c in row] for row in ranked] if item_of is not None and scoring.columns == "listing" else ranked
    for k in metrics.recall_ks:
        if scoring.hits == "count":
            out[f"R@{k}"] = M.count_at_k(lists, targets, k)
        elif metrics.recall_of == "any":
            out[f"R@{k}"] = M.recall_any_at_k(lists, correct, k)
        else:
            out[f"R@{k}"] = M.recall_at_k(lists, targets, k)
    subsets, references = [q.subset for q in queries], [q.reference for q in queries]
    for k in metrics.subset_ks:
        out[f"Rs@{k}"] = M.recall_subset_at_k(subset_ranked, targets, subsets, references, k)
    for k in metrics.map_ks:
        out[f"mAP@{k}"] = M.map_at_k(lists, correct, k, repeats=scoring.hits == "count")
    return out


def category_breakdown(
    metrics: Protocol, scoring: ScoringProtocol, queries: Sequence[Query], ranked: Rankings, subset_ranked: Rankings | None,
    item_of: dict[str, str] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{field: {value: metrics}} for every category field any query carries."""

    def compute(rows: list[int]) -> dict[str, float]:
        subset = [subset_ranked[i] for i in rows] if subset_ranked is not None else None
        return task_metrics(metrics, scoring, [queries[i] for i in rows], [ranked[i] for i in rows], subset, item_of)

    fields = sorted({f for q in queries for f in q.categories})
    return {f: M.breakdown([q.categories.get(f) for q in queries], compute) for f in fields}
