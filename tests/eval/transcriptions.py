"""Every evaluation protocol written out as plain loops over Python floats, from
../shared/guide/benchmarks.md ("What the CoVR-2 evaluation code computes") for `covr2` and from the
README for `covr`. Nothing here calls covr.eval or torch: it is the independent reference the
evaluator is compared with (tests/eval/test_eval_protocols.py).

Embeddings are nested lists: a query is tokens [Q][E]; a gallery item is frames [F][Q][E].
Ties are broken towards the lower column index (the rule covr documents; CoVR's np.argsort leaves it open).
"""

from __future__ import annotations

import math


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def token_mean(tokens):
    return [sum(t[e] for t in tokens) / len(tokens) for e in range(len(tokens[0]))]


def normalised(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def pool(frames, weights):
    """sum_f w_f * frames[f], per token and dimension."""
    return [[sum(w * f[q][e] for w, f in zip(weights, frames)) for e in range(len(frames[0][0]))] for q in range(len(frames[0]))]


def softmax_weights(scores, temperature=0.1):
    top = max(scores)
    exps = [math.exp((s - top) / temperature) for s in scores]
    return [x / sum(exps) for x in exps]


def order(scores):
    """Column indices best first: score descending, then lower index."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))


def rank_of(scores, column):
    """0-based position of `column` in `order(scores)`."""
    return sum(1 for j, s in enumerate(scores) if s > scores[column] or (s == scores[column] and j < column))


def recall(hits):
    return 100.0 * sum(hits) / len(hits)


def average_precision(ranked, ground_truths, k):
    found, total = 0, 0.0
    for i, item in enumerate(ranked[:k], start=1):
        if item in ground_truths:
            found += 1
            total += found / i
    return total / min(len(ground_truths), k)


# ---- WebVid-CoVR -------------------------------------------------------------------------------


def webvid_covr2(rows, frames_of, query_tokens, ks=(1, 5, 10, 50)):
    """rows: [{"reference", "target", "scores"}]; frames_of: {video: [F][Q][E]} (stored frames);
    column i = row i's target pooled with softmax(scores / 0.1) (uniform when the list is empty or
    its length is not F), every token re-normalised, token mean; query = token mean; a column whose
    target is row i's reference scores -10; R@K = share of rows whose own column ranks < K."""
    columns = []
    for row in rows:
        frames = frames_of[row["target"]]
        scores = row["scores"] or []
        weights = softmax_weights(scores) if scores and len(scores) == len(frames) else [1.0 / len(frames)] * len(frames)
        columns.append(token_mean([normalised(t) for t in pool(frames, weights)]))
    ranks = []
    for i, row in enumerate(rows):
        q = token_mean(query_tokens[i])
        scores = [-10.0 if rows[j]["target"] == row["reference"] else dot(q, c) for j, c in enumerate(columns)]
        ranks.append(rank_of(scores, i))
    return {f"R@{k}": recall([r < k for r in ranks]) for k in ks}


def webvid_covr(rows, frames_of, query_tokens, ks=(1, 5, 10, 50)):
    """covr's own: one column per unique target (first appearance), frames pooled uniformly, token
    mean; the reference video removed from the ranking; hit when the target id is in the top K."""
    gallery = list(dict.fromkeys(row["target"] for row in rows))
    columns = [token_mean(pool(frames_of[v], [1.0 / len(frames_of[v])] * len(frames_of[v]))) for v in gallery]
    hits = {k: [] for k in ks}
    for i, row in enumerate(rows):
        q = token_mean(query_tokens[i])
        scores = [dot(q, c) for c in columns]
        ranked = [gallery[j] for j in order(scores) if gallery[j] != row["reference"]]
        for k in ks:
            hits[k].append(row["target"] in ranked[:k])
    return {f"R@{k}": recall(h) for k, h in hits.items()}


# ---- image benchmarks (one frame per item) ----------------------------------------------------


def image_scores(query, gallery_ids, tokens_of, similarity):
    """similarity "mean": token-mean dot product; "max_token_pair": max over query x target tokens."""
    if similarity == "mean":
        q = token_mean(query)
        return [dot(q, token_mean(tokens_of[g])) for g in gallery_ids]
    return [max(dot(a, b) for a in query for b in tokens_of[g]) for g in gallery_ids]


def ranked_ids(query, reference, gallery_ids, tokens_of, similarity, mask_value):
    """Full ranking of gallery ids; the reference scored `mask_value`, or removed when it is None."""
    scores = image_scores(query, gallery_ids, tokens_of, similarity)
    if mask_value is not None:
        scores = [mask_value if g == reference else s for g, s in zip(gallery_ids, scores)]
    return [gallery_ids[j] for j in order(scores) if mask_value is not None or gallery_ids[j] != reference]


def cirr(queries, gallery_ids, tokens_of, query_tokens, similarity, mask_value):
    """queries: [{"reference", "target", "subset"}] -> R@1/5/10/50 and Rs@1/2/3 (subset: members
    other than the reference, in the order of the full ranking)."""
    out = {}
    rankings = [ranked_ids(query_tokens[i], q["reference"], gallery_ids, tokens_of, similarity, mask_value) for i, q in enumerate(queries)]
    for k in (1, 5, 10, 50):
        out[f"R@{k}"] = recall([q["target"] in r[:k] for q, r in zip(queries, rankings)])
    for k in (1, 2, 3):
        subsets = [[x for x in r if x in q["subset"] and x != q["reference"]] for q, r in zip(queries, rankings)]
        out[f"Rs@{k}"] = recall([q["target"] in s[:k] for q, s in zip(queries, subsets)])
    return out


def single_target(queries, gallery_ids, tokens_of, query_tokens, mask_value, ks=(1, 5, 10, 50)):
    """FashionIQ / CIRCO recall: token means; the reference masked (or removed; or kept when its
    query's "keep_reference" is set: CLIP4Cir)."""
    out = {}
    rankings = []
    for i, q in enumerate(queries):
        reference = None if q.get("keep_reference") else q["reference"]
        scores = image_scores(query_tokens[i], gallery_ids, tokens_of, "mean")
        if reference is not None and mask_value is not None:
            scores = [mask_value if g == reference else s for g, s in zip(gallery_ids, scores)]
        rankings.append([gallery_ids[j] for j in order(scores) if mask_value is not None or gallery_ids[j] != reference])
    for k in ks:
        out[f"R@{k}"] = recall([q["target"] in r[:k] for q, r in zip(queries, rankings)])
    if all(q.get("gts") for q in queries):
        for k in (5, 10, 25, 50):
            out[f"mAP@{k}"] = 100.0 * sum(average_precision(r, q["gts"], k) for q, r in zip(queries, rankings)) / len(queries)
    return out


def min_gap(values):
    """Smallest difference between two distinct values (to show a fixture has no near-ties)."""
    distinct = sorted(set(values))
    return min((b - a for a, b in zip(distinct, distinct[1:])), default=math.inf)
