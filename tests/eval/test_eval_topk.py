"""Chunked top-K equals a full sort: exclusions (removed or masked), ties (lower index first), every similarity mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from covr.eval.topk import rank_candidates, topk_faiss, topk_similarity


def full_sort(query, gallery, k, mode, exclude, mask_value=None):
    """Reference: every score by a loop, python sort by (-score, index); exclusions removed, or
    scored `mask_value` and kept."""
    out = []
    for row in range(query.shape[0]):
        tokens = query[row].float() if query.dim() == 3 else query[row].float()[None]  # [Q, E]
        s = []
        for item in gallery.float():
            item = item if item.dim() == 2 else item[None]  # [K, E]
            if mode == "mean":
                s.append(float(tokens.mean(0) @ item.mean(0)))
            elif mode == "max_target_token":
                s.append(max(float(tokens.mean(0) @ t) for t in item))
            else:
                s.append(max(float(a @ b) for a in tokens for b in item))
        banned = set(exclude[row])
        if mask_value is not None:
            s = [mask_value if i in banned else v for i, v in enumerate(s)]
            banned = set()
        out.append(sorted((i for i in range(len(s)) if i not in banned), key=lambda i: (-s[i], i))[:k])
    return out


def random_exclusions(generator, num_queries, num_gallery):
    return [torch.randint(0, num_gallery, (int(torch.randint(0, 3, (1,), generator=generator)),), generator=generator).tolist() for _ in range(num_queries)]


@pytest.mark.parametrize("query_chunk,gallery_chunk", [(1, 1), (3, 7), (16, 64), (1000, 1000), (5, 250)])
def test_random_inputs_equal_full_sort(query_chunk, gallery_chunk):
    g = torch.Generator().manual_seed(query_chunk * 31 + gallery_chunk)
    query = F.normalize(torch.randn(37, 16, generator=g), dim=-1)
    gallery = F.normalize(torch.randn(251, 16, generator=g), dim=-1)
    exclude = random_exclusions(g, 37, 251)
    _, indices = topk_similarity(query, gallery, 20, "mean", exclude, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    assert indices.tolist() == full_sort(query, gallery, 20, "mean", exclude)


@pytest.mark.parametrize("gallery_chunk", [1, 4, 9, 50])
def test_ties_go_to_the_lower_index(gallery_chunk):
    # small integers: every dot product is exact in fp32, and ties are everywhere
    g = torch.Generator().manual_seed(gallery_chunk)
    query = torch.randint(-2, 3, (23, 4), generator=g).float()
    gallery = torch.randint(-2, 3, (97, 4), generator=g).float()
    exclude = random_exclusions(g, 23, 97)
    _, indices = topk_similarity(query, gallery, 15, "mean", exclude, query_chunk=5, gallery_chunk=gallery_chunk)
    assert indices.tolist() == full_sort(query, gallery, 15, "mean", exclude)


def test_hand_tie_case():
    query = torch.tensor([[1.0]])
    gallery = torch.tensor([[1.0], [3.0], [3.0], [2.0], [3.0]])
    _, indices = topk_similarity(query, gallery, 2, gallery_chunk=2)
    assert indices.tolist() == [[1, 2]]
    _, indices = topk_similarity(query, gallery, 3, exclude=[[2]], gallery_chunk=2)
    assert indices.tolist() == [[1, 4, 3]]


@pytest.mark.parametrize("gallery_chunk", [3, 40])
@pytest.mark.parametrize("mode", ["mean", "max_target_token", "max_token_pair"])
def test_token_modes(gallery_chunk, mode):
    g = torch.Generator().manual_seed(7)
    query = F.normalize(torch.randn(11, 4, 8, generator=g), dim=-1)  # [Bq, Q, E]
    gallery = F.normalize(torch.randn(60, 3, 8, generator=g), dim=-1)  # [N, K, E]
    exclude = random_exclusions(g, 11, 60)
    _, indices = topk_similarity(query, gallery, 10, mode, exclude, query_chunk=4, gallery_chunk=gallery_chunk)
    assert indices.tolist() == full_sort(query, gallery, 10, mode, exclude)


def test_max_token_pair_is_not_the_pooled_query():
    query = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # two orthogonal query tokens
    gallery = torch.tensor([[[1.0, 0.0]], [[0.6, 0.6]]])  # one token each
    assert topk_similarity(query, gallery, 1, "max_token_pair")[1].tolist() == [[0]]  # 1.0 beats 0.6
    assert topk_similarity(query, gallery, 1, "max_target_token")[1].tolist() == [[1]]  # mean query: 0.5 vs 0.6
    with pytest.raises(ValueError, match="was split in two"):
        topk_similarity(query, gallery, 1, "max")


@pytest.mark.parametrize("gallery_chunk", [2, 50])
def test_masked_entries_rank_last_with_their_value(gallery_chunk):
    g = torch.Generator().manual_seed(11)
    query = torch.randint(-2, 3, (9, 4), generator=g).float()  # exact ties, masked and unmasked
    gallery = torch.randint(-2, 3, (30, 4), generator=g).float()
    exclude = [[0, 1, 2]] * 4 + [list(range(30))] + [[]] * 4
    values, indices = topk_similarity(query, gallery, 30, "mean", exclude, gallery_chunk=gallery_chunk, mask_value=-100.0)
    assert indices.tolist() == full_sort(query, gallery, 30, "mean", exclude, mask_value=-100.0)
    assert (values[4] == -100.0).all() and (indices >= 0).all()


def test_fp16_gallery_and_block_budget():
    g = torch.Generator().manual_seed(3)
    query = F.normalize(torch.randn(9, 8, generator=g), dim=-1)
    gallery = F.normalize(torch.randn(300, 8, generator=g), dim=-1).half()
    _, indices = topk_similarity(query, gallery, 12, max_block_elements=64)  # tiny blocks
    assert indices.tolist() == full_sort(query, gallery, 12, "mean", [[]] * 9)


def test_k_larger_than_gallery_and_everything_excluded():
    query = torch.eye(2)
    gallery = torch.eye(2)[[0, 1, 0]]
    values, indices = topk_similarity(query, gallery, 10, exclude=[[0, 1, 2], [2]])
    assert indices.tolist() == [[-1, -1, -1], [1, 0, -1]]
    assert values[0].isinf().all() and values[1, 2].isinf()


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        topk_similarity(torch.tensor([[float("nan")]]), torch.ones(3, 1), 2)


def test_rank_candidates_orders_each_subset():
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[0.1, 0.0], [0.5, 0.0], [0.5, 0.0], [0.9, 0.0]])
    assert rank_candidates(query, gallery, [[2, 0, 1, 3]]) == [[3, 1, 2, 0]]
    assert rank_candidates(query, gallery, [[]]) == [[]]


def test_faiss_exact_path_matches():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(5)
    query = F.normalize(torch.randn(13, 16, generator=g), dim=-1)
    gallery = F.normalize(torch.randn(200, 16, generator=g), dim=-1)
    exclude = random_exclusions(g, 13, 200)
    _, indices = topk_faiss(query, gallery, 10, exclude)
    assert indices.tolist() == full_sort(query, gallery, 10, "mean", exclude)
    _, indices = topk_faiss(query, gallery, 200, exclude, mask_value=-10.0)  # masked entries appended last
    assert indices.tolist() == full_sort(query, gallery, 200, "mean", exclude, mask_value=-10.0)
