"""Exact top-K retrieval over large galleries in bounded blocks, and an optional faiss path.

The query x gallery similarity matrix is never materialised whole: the gallery is walked in
chunks (outer loop, so each chunk is cast / moved to the device once), queries in chunks (inner
loop), and a running top-K per query is merged after every block. At most one block of
`query_chunk x gallery_chunk` scores (x Q tokens in "max" mode) exists at a time.

Ordering is deterministic: score descending, then lower gallery index first. Excluded entries
(a query's own reference) never appear by default (`mask_value=-inf`); a finite `mask_value`
keeps them ranked with that score instead (CoVR-2's -10 / -100), i.e. after every real score.
When fewer than K entries remain, the tail of a row is padded with index -1 and score -inf.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from covr.similarity import POOLED_QUERY_MODES, SimilarityMode, check_mode, pool_tokens, similarity

DEFAULT_BLOCK_ELEMENTS = 1 << 25  # 32M scores (128 MB fp32) per block
# A re-scorer (covr.eval.rerank) turns a block of base scores [b, c] of query rows [b] and gallery
# columns [c] into final scores, before masking; one with `full_rows = True` (rank fusion) needs
# every column of its rows in one block, and `block_factor` says how many scores it holds per pair.
Rescorer = Callable[[Tensor, Tensor, Tensor], Tensor]


def _full_rows(rescore: Rescorer | None) -> bool:
    return bool(getattr(rescore, "full_rows", False))


def _block_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of each row of scores [B, N] ordered by (score desc, index asc) -> ([B, k], [B, k])."""
    extra = int(k < scores.shape[1])
    values, indices = scores.topk(k + extra, dim=1)
    if torch.isnan(values).any():
        raise ValueError("similarity scores contain NaN: check the query / gallery embeddings")
    # torch.topk picks arbitrarily among values tied with the k-th one; a tie crosses the cut
    # exactly when the (k+1)-th value equals the k-th: redo those rows with a stable full sort.
    if extra:
        ambiguous = values[:, k] == values[:, k - 1]
    else:
        ambiguous = torch.zeros(len(values), dtype=torch.bool, device=values.device)
    values, indices = values[:, :k], indices[:, :k]
    if ambiguous.any():
        rows = ambiguous.nonzero().squeeze(1)
        v, i = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        values[rows], indices[rows] = v[:, :k], i[:, :k]
    if k > 1 and (values[:, 1:] == values[:, :-1]).any():  # ties inside the top-k: lower index first
        by_index = indices.argsort(dim=1)
        values, indices = values.gather(1, by_index), indices.gather(1, by_index)
        values, order = values.sort(dim=1, descending=True, stable=True)
        indices = indices.gather(1, order)
    return values, indices


def _mask(scores: Tensor, rows: Tensor, cols: Tensor, mask_value: float, mask_mode: str) -> None:
    """Mask scores[rows, cols] in place: set to mask_value, or ("subtract") shift by it (once per entry)."""
    if mask_mode == "subtract":
        scores[rows, cols] += mask_value
    elif mask_mode == "set":
        scores[rows, cols] = mask_value
    else:
        raise ValueError(f"unknown mask mode {mask_mode!r}; expected 'set' or 'subtract'")


def _exclusion_pairs(exclude: Sequence[Sequence[int]] | None, num_queries: int) -> tuple[Tensor, Tensor]:
    """Flatten per-query excluded gallery indices into (rows, cols) long tensors."""
    if exclude is None:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    if len(exclude) != num_queries:
        raise ValueError(f"exclude has {len(exclude)} entries for {num_queries} queries")
    rows = [i for i, cols in enumerate(exclude) for _ in cols]
    cols = [c for cols in exclude for c in cols]
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


def topk_similarity(
    query: Tensor,
    gallery: Tensor,
    k: int,
    mode: SimilarityMode = "mean",
    exclude: Sequence[Sequence[int]] | None = None,
    query_chunk: int = 1024,
    gallery_chunk: int | None = None,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    mask_value: float = float("-inf"),
    mask_mode: str = "set",
    rescore: Rescorer | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact top-k gallery entries per query.

    query:   [Bq, E] or [Bq, Q, E] (token-mean pooled unless the mode scores tokens), on the device to compute on
    gallery: [N, E] or [N, K, E] (token form needed for the max modes), any device / float dtype
    exclude: per query, gallery indices scored `mask_value` (-inf: never returned), or their score +
             `mask_value` with mask_mode "subtract" (TF-CoVR's code: masked entries keep their order)
    gallery_chunk: rows per gallery chunk (default: fill `max_block_elements` per block)
    rescore: re-scores each block before masking (see `Rescorer`)
    returns  scores [Bq, min(k, N)] fp32 and indices [Bq, min(k, N)] long, best first
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_mode(mode)
    query = (pool_tokens(query) if mode in POOLED_QUERY_MODES else query).float()  # [Bq, E] or [Bq, Q, E]
    device, num_queries, num_gallery = query.device, query.shape[0], gallery.shape[0]
    k = min(k, num_gallery)
    tokens = gallery.shape[1] if mode != "mean" and gallery.dim() == 3 else 1
    tokens *= query.shape[1] if query.dim() == 3 else 1  # scores per (query, item) pair inside a block
    query_chunk = max(1, min(query_chunk, num_queries))
    if _full_rows(rescore):  # whole rows per block: fewer query rows at a time
        gallery_chunk = num_gallery
        per_row = num_gallery * tokens * int(getattr(rescore, "block_factor", 1))
        query_chunk = max(1, min(query_chunk, max_block_elements // max(1, per_row)))
    if gallery_chunk is None:  # a re-scorer's own scores per pair shrink the block
        gallery_chunk = max(k, max_block_elements // (query_chunk * tokens * int(getattr(rescore, "block_factor", 1))))
    ex_rows, ex_cols = _exclusion_pairs(exclude, num_queries)
    best_values = [query.new_empty(min(query_chunk, num_queries - q0), 0) for q0 in range(0, num_queries, query_chunk)]
    best_indices = [torch.empty_like(v, dtype=torch.long) for v in best_values]
    for g0 in range(0, num_gallery, gallery_chunk):
        g1 = min(g0 + gallery_chunk, num_gallery)
        chunk = gallery[g0:g1].to(device=device, dtype=torch.float32)
        if mode == "mean":
            chunk = pool_tokens(chunk)  # [bg, E]
        in_chunk = (ex_cols >= g0) & (ex_cols < g1)
        chunk_rows, chunk_cols = ex_rows[in_chunk], ex_cols[in_chunk] - g0
        for c, q0 in enumerate(range(0, num_queries, query_chunk)):
            q1 = min(q0 + query_chunk, num_queries)
            scores = similarity(query[q0:q1], chunk, mode)  # [bq, bg]
            if rescore is not None:
                scores = rescore(torch.arange(q0, q1, device=device), torch.arange(g0, g1, device=device), scores)
            hit = (chunk_rows >= q0) & (chunk_rows < q1)
            if hit.any():
                _mask(scores, (chunk_rows[hit] - q0).to(device), chunk_cols[hit].to(device), mask_value, mask_mode)
            values, indices = _block_topk(scores, min(k, g1 - g0))
            del scores  # free this block before the next one is computed
            if g0 > 0:  # merge; earlier chunks hold lower indices, so a stable sort keeps (score desc, index asc)
                values = torch.cat([best_values[c], values], dim=1)
                indices = torch.cat([best_indices[c], indices + g0], dim=1)
                values, order = values.sort(dim=1, descending=True, stable=True)
                values, indices = values[:, :k], indices.gather(1, order[:, :k])
            best_values[c], best_indices[c] = values, indices
    values, indices = torch.cat(best_values), torch.cat(best_indices)
    indices[values == float("-inf")] = -1
    return values, indices


def topk_faiss(
    query: Tensor,
    gallery: Tensor,
    k: int,
    exclude: Sequence[Sequence[int]] | None = None,
    index_factory: str = "Flat",
    nprobe: int = 16,
    mask_value: float = float("-inf"),
) -> tuple[Tensor, Tensor]:
    """Top-k by inner product with faiss (`pip install covr[faiss]`); mean-pooled similarity only.

    index_factory "Flat" is exact (IndexFlatIP); e.g. "IVF4096,Flat" or "HNSW32" are approximate.
    Ties are ordered as faiss returns them. Same output convention as `topk_similarity` (a finite
    `mask_value` appends excluded entries, lower index first, when fewer than k others remain).
    """
    try:
        import faiss
    except ImportError as error:
        raise ImportError("the faiss top-k path needs faiss-cpu: pip install 'covr[faiss]'") from error
    q = pool_tokens(query).float().cpu().contiguous().numpy()
    g = pool_tokens(gallery).float().cpu().contiguous().numpy()
    index = faiss.index_factory(g.shape[1], index_factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(g)
    index.add(g)
    if hasattr(index, "nprobe"):
        index.nprobe = nprobe
    k = min(k, g.shape[0])
    extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
    scores, ids = index.search(q, min(k + extra, g.shape[0]))
    values = torch.full((q.shape[0], k), float("-inf"))
    indices = torch.full((q.shape[0], k), -1, dtype=torch.long)
    for row in range(q.shape[0]):
        banned = set(exclude[row]) if exclude is not None else set()
        kept = [(s, i) for s, i in zip(scores[row].tolist(), ids[row].tolist()) if i >= 0 and i not in banned][:k]
        if mask_value != float("-inf"):
            kept += [(mask_value, i) for i in sorted(banned)][: k - len(kept)]
        if kept:
            values[row, : len(kept)] = torch.tensor([s for s, _ in kept])
            indices[row, : len(kept)] = torch.tensor([i for _, i in kept])
    return values, indices


def rank_candidates(
    query: Tensor, gallery: Tensor, candidates: Sequence[Sequence[int]], mode: SimilarityMode = "mean", rescore: Rescorer | None = None
) -> list[list[int]]:
    """Rank each query's own small candidate set (CIRR img_set): gallery indices, best first.

    query [Bq, E] or [Bq, Q, E]; gallery [N, E] or [N, K, E]; ties go to the lower gallery index;
    `rescore` as in `topk_similarity` (a full-row one scores the whole gallery, then the members).
    """
    if len(candidates) != query.shape[0]:
        raise ValueError(f"{len(candidates)} candidate lists for {query.shape[0]} queries")
    query = (pool_tokens(query) if mode in POOLED_QUERY_MODES else query).float()
    ranked: list[list[int]] = []
    for row, members in enumerate(candidates):
        if not members:
            ranked.append([])
            continue
        index = torch.tensor(sorted(set(members)), dtype=torch.long)
        if _full_rows(rescore):
            everything = torch.arange(gallery.shape[0], device=query.device)
            full = similarity(query[row : row + 1], gallery.to(device=query.device, dtype=torch.float32), mode)
            scores = rescore(torch.tensor([row], device=query.device), everything, full)[0, index.to(query.device)].cpu()
        else:
            members_emb = gallery[index].to(device=query.device, dtype=torch.float32)
            scores = similarity(query[row : row + 1], members_emb, mode)  # [1, C]
            if rescore is not None:
                scores = rescore(torch.tensor([row], device=query.device), index.to(query.device), scores)
            scores = scores[0].cpu()
        order = scores.sort(descending=True, stable=True).indices
        ranked.append(index[order].tolist())
    return ranked


def topk_within(
    query: Tensor,
    gallery: Tensor,
    candidates: Sequence[Sequence[int]],
    k: int,
    mode: SimilarityMode = "mean",
    exclude: Sequence[Sequence[int]] | None = None,
    mask_value: float = float("-inf"),
    mask_mode: str = "set",
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    rescore: Rescorer | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact top-k per query among its own candidate gallery indices (EgoCVR's per-query galleries).

    Queries are scored in groups against the union of their candidates (at most `max_block_elements`
    scores per group); entries outside a query's candidates never appear; `exclude` / `mask_value`
    / `mask_mode` act as in `topk_similarity` on the candidates. Same ordering and output convention:
    scores and indices [Bq, min(k, largest candidate count)], padded with -inf / -1.
    """
    if len(candidates) != query.shape[0]:
        raise ValueError(f"{len(candidates)} candidate lists for {query.shape[0]} queries")
    check_mode(mode)
    if _full_rows(rescore):
        raise ValueError("a rank-fusion re-scorer needs the whole gallery of a query; per-query galleries (EgoCVR) cannot use it")
    query = (pool_tokens(query) if mode in POOLED_QUERY_MODES else query).float()
    tokens = (gallery.shape[1] if mode != "mean" and gallery.dim() == 3 else 1) * (query.shape[1] if query.dim() == 3 else 1)
    width = max(1, min(k, max((len(set(c)) for c in candidates), default=1)))
    values = torch.full((query.shape[0], width), float("-inf"), device=query.device)
    indices = torch.full((query.shape[0], width), -1, dtype=torch.long, device=query.device)
    groups: list[list[int]] = [[]]
    union: set[int] = set()
    for row, members in enumerate(candidates):
        grown = union | set(members)
        if groups[-1] and (len(groups[-1]) + 1) * len(grown) * tokens > max_block_elements:
            groups.append([])
            grown = set(members)
        groups[-1].append(row)
        union = grown
    for rows in groups:
        columns = sorted({c for r in rows for c in candidates[r]})
        if not columns:
            continue
        position = {c: j for j, c in enumerate(columns)}
        chunk = gallery[torch.tensor(columns, dtype=torch.long)].to(device=query.device, dtype=torch.float32)
        scores = similarity(query[rows], pool_tokens(chunk) if mode == "mean" else chunk, mode)  # [b, u]
        if rescore is not None:
            scores = rescore(torch.tensor(rows, device=query.device), torch.tensor(columns, device=query.device), scores)
        if exclude is not None:
            pairs = [(i, position[c]) for i, r in enumerate(rows) for c in exclude[r] if c in position]
            if pairs:
                r_idx, c_idx = torch.tensor(pairs, dtype=torch.long, device=query.device).T
                _mask(scores, r_idx, c_idx, mask_value, mask_mode)
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        for i, r in enumerate(rows):
            allowed[i, [position[c] for c in set(candidates[r])]] = True
        scores[~allowed] = float("-inf")  # after masking: an excluded non-candidate stays out
        top_values, top = _block_topk(scores, min(width, len(columns)))
        mapped = torch.tensor(columns, dtype=torch.long, device=query.device)[top]
        mapped[top_values == float("-inf")] = -1
        row_index = torch.tensor(rows, dtype=torch.long, device=query.device)
        values[row_index, : top.shape[1]] = top_values
        indices[row_index, : top.shape[1]] = mapped
    return values, indices
