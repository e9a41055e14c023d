"""Retrieval metrics as pure functions over ranked id lists.
Hand-written on purpose, because: library retrieval metrics do not compute the benchmarks' own variants (CIRR subset recall, CIRCO mAP over several ground truths, EgoCVR's any-correct recall).

`ranked[i]` is query i's gallery ids, best first, without duplicates (reference already removed
where the protocol says so). Every metric returns a percentage averaged over queries.
Definitions follow `shared/guide/benchmarks.md`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence

Id = Hashable


def _check_lengths(name: str, ranked: Sequence, other: Sequence) -> None:
    if len(ranked) != len(other):
        raise ValueError(f"{name}: {len(ranked)} ranked lists but {len(other)} targets")


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _percent(hits: float, n: int) -> float:
    return 100.0 * hits / n if n else float("nan")


def recall_at_k(ranked: Sequence[Sequence[Id]], targets: Sequence[Id], k: int) -> float:
    """Percentage of queries whose single target is among their first k ranked ids."""
    _check_lengths("recall_at_k", ranked, targets)
    _check_k(k)
    hits = sum(target in list(r[:k]) for r, target in zip(ranked, targets))
    return _percent(hits, len(targets))


def recall_any_at_k(ranked: Sequence[Sequence[Id]], correct: Sequence[Collection[Id]], k: int) -> float:
    """Percentage of queries with at least one of their correct ids among their first k (EgoCVR)."""
    _check_lengths("recall_any_at_k", ranked, correct)
    _check_k(k)
    hits = sum(bool(set(r[:k]) & set(c)) for r, c in zip(ranked, correct))
    return _percent(hits, len(correct))


def count_at_k(ranked: Sequence[Sequence[Id]], targets: Sequence[Id], k: int) -> float:
    """TF-CoVR's R@K: the mean number of times the target appears among the first k, in percent
    (a list that repeats gallery items can show the target more than once: not capped at 100)."""
    _check_lengths("count_at_k", ranked, targets)
    _check_k(k)
    return _percent(sum(list(r[:k]).count(t) for r, t in zip(ranked, targets)), len(targets))


def average_precision_at_k(ranked: Sequence[Id], ground_truths: Collection[Id], k: int, repeats: bool = False) -> float:
    """CIRCO AP@K of one query (a fraction): sum_{i<=K} rel_i * P@i / min(|G|, K).

    A ranked list with duplicate ids is an error (it would count one ground truth twice), unless
    `repeats` (TF-CoVR's code on its repeating gallery): then every entry showing a ground truth
    counts, and |G| is the length of the list as given.
    """
    _check_k(k)
    top = list(ranked[:k])
    if not repeats and len(set(top)) != len(top):
        dup = next(x for i, x in enumerate(top) if x in top[:i])
        raise ValueError(f"ranked list has duplicate id {dup!r} in its first {k} entries")
    gts = set(ground_truths)
    if not gts:
        raise ValueError("average precision needs at least one ground truth")
    found, total = 0, 0.0
    for i, item in enumerate(top, start=1):
        if item in gts:
            found += 1
            total += found / i
    return total / min(len(ground_truths) if repeats else len(gts), k)


def map_at_k(ranked: Sequence[Sequence[Id]], ground_truths: Sequence[Collection[Id]], k: int, repeats: bool = False) -> float:
    """CIRCO mAP@K in percent: mean over queries of `average_precision_at_k`."""
    _check_lengths("map_at_k", ranked, ground_truths)
    total = sum(average_precision_at_k(r, g, k, repeats) for r, g in zip(ranked, ground_truths))
    return _percent(total, len(ranked))


def subset_ranking(ranked: Sequence[Id], subset: Collection[Id], reference: Id) -> list[Id]:
    """The order of `subset` members (other than the reference) as they appear in `ranked`.

    Members absent from `ranked` are unrankable (e.g. an unreadable gallery image) and left out,
    which counts them as ranked below every present member.
    """
    members = set(subset) - {reference}
    return [x for x in ranked if x in members]


def recall_subset_at_k(
    ranked: Sequence[Sequence[Id]],
    targets: Sequence[Id],
    subsets: Sequence[Collection[Id]],
    references: Sequence[Id],
    k: int,
) -> float:
    """CIRR Recall_subset@K: rank only each query's img_set members other than its reference.

    `ranked` must contain every rankable member of the subset (a full ranking or one restricted to
    the subset); a target that is not a member of its subset is an error.
    """
    _check_lengths("recall_subset_at_k", ranked, targets)
    _check_lengths("recall_subset_at_k (subsets)", ranked, subsets)
    _check_lengths("recall_subset_at_k (references)", ranked, references)
    _check_k(k)
    hits = 0
    for i, (r, target, subset, reference) in enumerate(zip(ranked, targets, subsets, references)):
        if target not in subset or target == reference:
            raise ValueError(f"query {i}: target {target!r} is not a non-reference member of its subset {sorted(subset)}")
        hits += target in subset_ranking(r, subset, reference)[:k]
    return _percent(hits, len(targets))


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean (NaN for an empty sequence)."""
    return sum(values) / len(values) if values else float("nan")


def webvid_covr_means(metrics: dict[str, float]) -> dict[str, float]:
    """meanR3 = mean(R@1, R@5, R@10); meanR4 adds R@50."""
    r3 = [metrics["R@1"], metrics["R@5"], metrics["R@10"]]
    return {"meanR3": mean(r3), "meanR4": mean(r3 + [metrics["R@50"]])}


def cirr_average(metrics: dict[str, float]) -> dict[str, float]:
    """CIRR headline: Avg = (R@5 + Rs@1) / 2."""
    return {"Avg": (metrics["R@5"] + metrics["Rs@1"]) / 2}


def fashioniq_summary(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """FashionIQ: R@10 and R@50 per category, their means over categories, and the mean of those two."""
    out: dict[str, float] = {}
    for category, metrics in per_category.items():
        out[f"{category}/R@10"] = metrics["R@10"]
        out[f"{category}/R@50"] = metrics["R@50"]
    out["R@10"] = mean([m["R@10"] for m in per_category.values()])
    out["R@50"] = mean([m["R@50"] for m in per_category.values()])
    out["Avg"] = (out["R@10"] + out["R@50"]) / 2
    return out


def breakdown(
    labels: Sequence[str | None], compute: Callable[[list[int]], dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Metrics per label value: {label: compute(indices of the queries with that label)}.

    Queries whose label is None are left out; labels are reported in sorted order.
    """
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if label is not None:
            groups.setdefault(str(label), []).append(i)
    return {label: {**compute(groups[label]), "queries": len(groups[label])} for label in sorted(groups)}
