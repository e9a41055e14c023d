"""Inference-time re-scoring of the whole gallery inside the one evaluator: SoFT's soft filtering
with textual constraints, and the score fusions of covr.eval.fusion over precomputed artifacts.

SoFT (arXiv 2512.20781; ../shared/guide/seed-methods.md): per query a prescriptive text c+ (what
the target must show) and a proscriptive text c- (what it must not), either may be empty. With the
retriever's own encoders, r(x) = cos(E_T(c+), E_I(x)) and p(x) = cos(E_T(c-), E_I(x)) (0 for an
empty constraint), where E_I(x) is the gallery column's L2-normalised token mean; with s(x) the
protocol's score, soft(x) = s(x) (r(x) + 1 - p(x)) / 2 and final(x) = (1 - lambda) s(x) + lambda
soft(x), lambda = 1 by default. Constraint file (JSONL, from covr-soft-constraints or any MLLM):
  {"id": "<query id>", "prescriptive": "...", "proscriptive": "..."}   (both optional)

A fusion replaces s(x) by its own score (Paracosm, XR, CVSI); SoFT then applies on top of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from covr.data.errors import AnnotationError
from covr.data.jsonl import read_jsonl
from covr.eval import fusion as FU
from covr.eval.datasets.base import Query, read_json
from covr.eval.fusion_inputs import Encoders, file_text_lists, gallery_vectors, query_vectors
from covr.similarity import pool_tokens

RERANKERS = ("soft",)
FUSIONS = ("paracosm", "xr", "cvsi")
FUSION_KEYS = {  # (required, optional) keys of each fusion
    "paracosm": (("mental_image", "mental_description", "twin"), ("text", "weights")),
    "xr": (("descriptions", "gallery_captions"), ("verification", "image_weight", "rrf_k", "rerank_top")),
    "cvsi": (("query_parts", "gallery_parts"), ()),
}


def read_constraints(path: str | Path) -> dict[str, tuple[str, str]]:
    """{query id: (prescriptive, proscriptive)} from a JSONL constraint file (module docstring)."""
    table: dict[str, tuple[str, str]] = {}
    for number, entry in read_jsonl(path, "constraint file"):
        if "id" not in entry:
            raise AnnotationError(f"{path}: line {number}: expected {{'id', 'prescriptive', 'proscriptive'}}: {json.dumps(entry)[:200]}")
        texts = tuple(entry.get(field) or "" for field in ("prescriptive", "proscriptive"))
        if not all(isinstance(t, str) for t in texts):
            raise AnnotationError(f"{path}: line {number}: 'prescriptive' / 'proscriptive' must be strings: {json.dumps(entry)[:200]}")
        if str(entry["id"]) in table:
            raise AnnotationError(f"{path}: line {number}: query id {entry['id']!r} appears twice")
        table[str(entry["id"])] = texts  # type: ignore[assignment]
    return table


def soft_scores(scores: Tensor, prescriptive: Tensor, proscriptive: Tensor, images: Tensor, lam: float = 1.0) -> Tensor:
    """SoFT: base scores [b, c], constraint features [b, E] (zero rows: no constraint) and normalised
    gallery features [c, E] -> final scores [b, c]."""
    # (1 - lam) s + lam s (r + 1 - p) / 2 = s ((1 - lam) + lam (r + 1 - p) / 2), built in place: one extra block
    factor = prescriptive @ images.T
    factor.sub_(proscriptive @ images.T).add_(1.0).mul_(lam / 2.0).add_(1.0 - lam)
    return factor.mul_(scores)


@dataclass
class SoftRescorer:
    """SoFT over blocks of (query rows, gallery columns); wraps a fusion's score when there is one."""

    prescriptive: Tensor  # [B, E] E_T(c+), zero rows where empty
    proscriptive: Tensor  # [B, E] E_T(c-)
    images: Tensor  # [C, E] normalised E_I of every column
    lam: float = 1.0
    inner: Any = None  # a fusion re-scorer applied first

    @property
    def full_rows(self) -> bool:
        return bool(getattr(self.inner, "full_rows", False))

    @property
    def block_factor(self) -> int:
        return int(getattr(self.inner, "block_factor", 1)) + 3  # r, p and the gathered rows beside the base scores

    def __call__(self, rows: Tensor, columns: Tensor, scores: Tensor) -> Tensor:
        if self.inner is not None:
            scores = self.inner(rows, columns, scores)
        images = self.images[columns.to(self.images.device)].to(scores.device)
        rows = rows.to(self.prescriptive.device)
        return soft_scores(scores, self.prescriptive[rows].to(scores.device), self.proscriptive[rows].to(scores.device), images, self.lam)


@dataclass
class BilinearRescorer:
    """A fusion whose score is query vector . column vector (Paracosm, CVSI): the base score is replaced."""

    queries: Tensor  # [B, E]
    columns: Tensor  # [C, E]
    full_rows: bool = False

    def __call__(self, rows: Tensor, columns: Tensor, scores: Tensor) -> Tensor:
        q, c = self.queries[rows.to(self.queries.device)], self.columns[columns.to(self.columns.device)]
        return (q @ c.T).to(device=scores.device, dtype=scores.dtype)


@dataclass
class XRRescorer:
    """XR: per-variant stage-1 scores fused by reciprocal rank over the whole gallery, then (with
    verification counts) stage 2 on the top `top`."""

    descriptions: Tensor  # [B, V, E]
    valid: Tensor  # [B, V]
    images: Tensor  # [C, E]
    captions: Tensor  # [C, E]
    passed: list[dict[int, float]] | None  # per query row: {column: questions passed}
    image_weight: float = FU.XR_IMAGE_WEIGHT
    k: float = FU.RRF_K
    top: int = FU.XR_RERANK_TOP
    full_rows: bool = True

    @property
    def block_factor(self) -> int:
        """Scores held per (query, column) pair: V variants, their ranks and sort order, in float64."""
        return 4 * self.descriptions.shape[1]

    def __call__(self, rows: Tensor, columns: Tensor, scores: Tensor) -> Tensor:
        if columns.numel() != self.images.shape[0]:
            raise ValueError("XR's rank fusion scores whole rows; got a partial block of columns")
        d = self.descriptions[rows.to(self.descriptions.device)]
        variants = FU.xr_variant_scores(d, self.images, self.captions, self.image_weight)  # [b, V, C]
        stage1 = FU.reciprocal_rank_fusion(variants, self.k, self.valid[rows.to(self.valid.device)])
        if self.passed is None:
            return stage1.to(device=scores.device, dtype=scores.dtype)
        passed = torch.zeros_like(stage1)
        for i, row in enumerate(rows.tolist()):
            for column, count in self.passed[row].items():
                passed[i, column] = count
        return FU.xr_rerank(stage1, passed, self.top).to(device=scores.device, dtype=scores.dtype)


def _verification(path: Path, queries: Sequence[Query], items: Sequence[str]) -> list[dict[int, float]]:
    """{query id: {gallery id: questions passed}} -> per query row {column: count} (absent: 0)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected {{query id: {{gallery id: questions passed}}}}")
    columns: dict[str, list[int]] = {}
    for c, item in enumerate(items):
        columns.setdefault(item, []).append(c)
    out = []
    for q in queries:
        counts = data.get(q.id, {})
        if not isinstance(counts, dict) or not all(isinstance(v, (int, float)) for v in counts.values()):
            raise AnnotationError(f"{path}: query {q.id}: expected {{gallery id: number of questions passed}}")
        out.append({c: float(v) for item, v in counts.items() for c in columns.get(str(item), ())})
    return out


def _weighted(spec: Any, what: str) -> list[tuple[str, float]]:
    valid = isinstance(spec, Sequence) and not isinstance(spec, str) and all(
        isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 for p in spec
    )  # fmt: skip
    if not valid or not spec:
        raise ValueError(f"fusion.{what} must be a list of [source, weight] pairs, got {spec!r}")
    return [(str(source), float(weight)) for source, weight in spec]


def build_fusion(spec: Mapping[str, Any], enc: Encoders, queries: Sequence[Query], query_tokens: Tensor, items: Sequence[str], column_embeddings: Tensor):
    """The fusion re-scorer of a `fusion:` benchmark option (README "Re-ranking and score fusion")."""
    method = spec.get("method")
    if method not in FUSIONS:
        raise ValueError(f"fusion.method must be one of {', '.join(FUSIONS)}, got {method!r}")
    missing = [key for key in FUSION_KEYS[method][0] if not spec.get(key)]
    if missing:
        raise ValueError(f"fusion {method} needs {', '.join(f'fusion.{m}' for m in missing)}")
    unknown = sorted(set(spec) - {"method", *FUSION_KEYS[method][0], *FUSION_KEYS[method][1]})
    if unknown:
        raise ValueError(f"fusion {method} got unknown key(s) {unknown}; it takes {[*FUSION_KEYS[method][0], *FUSION_KEYS[method][1]]}")
    if method == "paracosm":
        query = FU.paracosm_query(
            query_vectors(enc, spec["mental_image"], queries, query_tokens), query_vectors(enc, spec["mental_description"], queries, query_tokens),
            query_vectors(enc, spec.get("text", "text"), queries, query_tokens), spec.get("weights", FU.PARACOSM_WEIGHTS),
        )  # fmt: skip
        target = FU.paracosm_target(gallery_vectors(enc, "image", items, column_embeddings), gallery_vectors(enc, spec["twin"], items, column_embeddings))
        return BilinearRescorer(query, target)
    if method == "cvsi":
        q_parts, g_parts = _weighted(spec["query_parts"], "query_parts"), _weighted(spec["gallery_parts"], "gallery_parts")
        q = torch.stack([query_vectors(enc, s, queries, query_tokens) for s, _ in q_parts], dim=1)  # [B, P, E]
        g = torch.stack([gallery_vectors(enc, s, items, column_embeddings) for s, _ in g_parts], dim=1)  # [C, R, E]
        return BilinearRescorer(FU.fuse_parts(q, [w for _, w in q_parts]), FU.fuse_parts(g, [w for _, w in g_parts]))
    descriptions, valid = file_text_lists(enc, Path(spec["descriptions"]), [q.id for q in queries], "target descriptions")
    passed = _verification(Path(spec["verification"]), queries, items) if spec.get("verification") else None
    return XRRescorer(
        descriptions, valid, gallery_vectors(enc, "image", items, column_embeddings), gallery_vectors(enc, spec["gallery_captions"], items, column_embeddings),
        passed, float(spec.get("image_weight", FU.XR_IMAGE_WEIGHT)), float(spec.get("rrf_k", FU.RRF_K)), int(spec.get("rerank_top", FU.XR_RERANK_TOP)),
    )  # fmt: skip


def build_rescorer(
    cfg: Mapping[str, Any], enc: Encoders, queries: Sequence[Query], query_tokens: Tensor, items: Sequence[str], column_embeddings: Tensor
) -> tuple[Any, dict[str, Any] | None]:
    """(re-scorer or None, its record for results.json) from a benchmark config's `rerank`,
    `constraint_file`, `soft_lambda` and `fusion` options."""
    record: dict[str, Any] = {}
    rescorer = None
    if cfg.get("fusion"):
        fusion = dict(cfg["fusion"])
        rescorer = build_fusion(fusion, enc, queries, query_tokens, items, column_embeddings)
        record["fusion"] = {k: str(v) if isinstance(v, Path) else v for k, v in fusion.items()}
    method = cfg.get("rerank")
    if method:
        if method not in RERANKERS:
            raise ValueError(f"rerank must be one of {', '.join(RERANKERS)} (or null), got {method!r}")
        if not cfg.get("constraint_file"):
            raise ValueError("rerank=soft needs the benchmark's constraint_file (JSONL {id, prescriptive, proscriptive}; covr-soft-constraints writes one)")
        table = read_constraints(cfg["constraint_file"])
        missing = [q.id for q in queries if q.id not in table]
        if missing:
            raise AnnotationError(f"{cfg['constraint_file']}: no constraints for query {missing[0]!r} ({len(missing)} of {len(queries)} queries missing)")
        lam = float(cfg["soft_lambda"]) if cfg.get("soft_lambda") is not None else 1.0
        images = F.normalize(pool_tokens(column_embeddings.float()), dim=-1).to(enc.device)
        positive = enc.texts([table[q.id][0] for q in queries], images.shape[-1])
        negative = enc.texts([table[q.id][1] for q in queries], images.shape[-1])
        rescorer = SoftRescorer(positive, negative, images, lam, rescorer)
        record["soft"] = {
            "lambda": lam, "constraint_file": str(cfg["constraint_file"]),
            "prescriptive": int((positive.abs().sum(1) > 0).sum()), "proscriptive": int((negative.abs().sum(1) > 0).sum()),
        }  # fmt: skip
    return rescorer, record or None
