"""ReCALL's intra-group triplet term (arXiv 2602.01639): batches are grouped by reference video, and
within a group every query must prefer its own target to the group's other targets by a margin.

For queries i and j of the same group (same reference id) whose targets differ:
    l_ij = max(0, margin - cos(q_i, t_i) + cos(q_i, t_j))
averaged over all such ordered pairs of the batch; 0 when the batch has none. The groups are read
from the batch's reference ids, not assumed from the sampler, so a row that the data pipeline
swapped in for an undecodable one (another reference) simply forms a group of its own.
"""

from __future__ import annotations

from torch import Tensor


def group_triplet_loss(query: Tensor, target: Tensor, groups: Tensor, target_ids: Tensor, margin: float = 0.2) -> Tensor:
    """query, target [N, E] L2-normalised (row i's positive is target i); groups [N] reference ids;
    target_ids [N] target video ids (a pair showing the same target video is not a negative)."""
    similarity = query @ target.T  # [N, N] cosines: row i against every target of the batch
    pairs = (groups[:, None] == groups[None, :]) & (target_ids[:, None] != target_ids[None, :])
    hinge = (margin - similarity.diagonal()[:, None] + similarity).clamp_min(0.0)
    count = pairs.sum()
    if int(count) == 0:
        return (similarity * 0.0).sum()  # keeps the graph (DDP expects every trainable output used)
    return (hinge * pairs).sum() / count
