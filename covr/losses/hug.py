"""HUG: heterogeneous uncertainty-guided composed retrieval (arXiv 2601.11393), the objective.

Embeddings are Gaussians over the Q query tokens: mean mu [Q, E] (the per-token normalised
embeddings) and variance sigma^2 [Q, E] (from the uncertainty heads, covr.models.uncertainty).

    query variance        s_q^2 = sum_k w_k s_k^2, w_k = exp(-s_k^2) / sum_j exp(-s_j^2) per element
                          over the components k (image, text, multimodal): computed by the model
                          (covr.models.uncertainty.UncertaintyHeads.query_variance)
    distance              d(q, c) = ||mu_q - mu_c||^2 + ||s_q||^2 + ||s_c||^2   (sums over tokens x dims)
    holistic (L_HC)       mean_i [ -log sig(-a d_ii - b) - sum_{j != i} log sig(a d_ij + b) ]
                          a (init 1) and b (init 0) are learned
    fine-grained (L_FC)   per-token InfoNCE at tau: query token (i, k) against target tokens
                          (j, k) of every target j (instance-wise negatives) and (i, k') of its own
                          target (component-wise negatives: its other tokens); positive (i, k);
                          cosine similarities; mean over rows and tokens
    coordination (L_Cord) mean_i max(0, margin - (u(mismatched_i) - u(matched_i))), u = mean of
                          the multimodal sigma over tokens x dims; mismatched = the query encoded
                          with another row's text
    total                 holistic_weight L_HC + fine_grained_weight L_FC + coordination_weight L_Cord
                          (+ caption_weight HN-NCE(query, target caption), CoVR-2's caption term)

Everything is computed on the global batch (gathered with gradients, as covr.losses.contrastive).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from covr.losses.contrastive import gather_with_grad, hn_nce
from covr.similarity import pool_tokens


def gaussian_distance(query_mean: Tensor, query_var: Tensor, target_mean: Tensor, target_var: Tensor) -> Tensor:
    """d(q, c) for every query [B, Q, E] x target [N, Q, E] pair -> [B, N]."""
    q, c = query_mean.flatten(1), target_mean.flatten(1)
    squared = q.square().sum(1)[:, None] + c.square().sum(1)[None, :] - 2.0 * q @ c.T
    return squared + query_var.flatten(1).sum(1)[:, None] + target_var.flatten(1).sum(1)[None, :]


def holistic_loss(distance: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """Sigmoid loss on distances [B, B] (diagonal = matching pairs), learned scale a and bias b."""
    logits = scale * distance + bias
    positive = torch.eye(distance.shape[0], dtype=torch.bool, device=distance.device)
    # -log sig(-x) = softplus(x) for the positives, -log sig(x) = softplus(-x) for the negatives
    per_pair = torch.where(positive, F.softplus(logits), F.softplus(-logits))
    return per_pair.sum(dim=1).mean()


def fine_grained_loss(query_tokens: Tensor, target_tokens: Tensor, tau: float = 0.07) -> Tensor:
    """Per-token InfoNCE between query tokens [B, Q, E] and target tokens [B, Q, E] (row i matches i)."""
    q, c = F.normalize(query_tokens, dim=-1), F.normalize(target_tokens, dim=-1)
    b, n = q.shape[:2]
    instance = torch.einsum("ike,jke->ikj", q, c) / tau  # [B, Q, B]: token k of every target
    component = torch.einsum("ike,ile->ikl", q, c) / tau  # [B, Q, Q]: every token of the own target
    own = torch.eye(n, dtype=torch.bool, device=q.device)  # (i, k) itself is in `instance` already
    logits = torch.cat([instance, component.masked_fill(own, float("-inf"))], dim=2)
    positives = instance.diagonal(dim1=0, dim2=2).T  # [B, Q]: instance[i, k, i]
    return (torch.logsumexp(logits, dim=2) - positives).mean()


def coordination_loss(matched_sigma: Tensor, mismatched_sigma: Tensor, margin: float = 0.2) -> Tensor:
    """Hinge pushing the mean multimodal sigma of mismatched pairs [B, Q, E] above matched ones'."""
    matched, mismatched = matched_sigma.flatten(1).mean(1), mismatched_sigma.flatten(1).mean(1)
    return (margin - (mismatched - matched)).clamp_min(0.0).mean()


class HUGLoss(nn.Module):
    """The HUG objective over the global batch (see the module docstring for the formulas)."""

    def __init__(self, holistic_weight: float = 1.0, fine_grained_weight: float = 0.5, coordination_weight: float = 0.1,
                 fine_grained_tau: float = 0.07, margin: float = 0.2, caption_weight: float = 0.0,
                 alpha: float = 1.0, beta: float = 0.5, tau: float = 0.07):  # fmt: skip
        """alpha, beta, tau: HN-NCE of the caption term (caption_weight > 0)."""
        super().__init__()
        self.holistic_weight, self.fine_grained_weight, self.coordination_weight = holistic_weight, fine_grained_weight, coordination_weight
        self.fine_grained_tau, self.margin, self.caption_weight = fine_grained_tau, margin, caption_weight
        self.alpha, self.beta, self.tau = alpha, beta, tau

    def forward(self, query_mean: Tensor, query_var: Tensor, target_mean: Tensor, target_var: Tensor, scale: Tensor, bias: Tensor,
                matched_sigma: Tensor | None = None, mismatched_sigma: Tensor | None = None,
                target_caption: Tensor | None = None) -> dict[str, Tensor]:  # fmt: skip
        """query_mean / query_var [b, Q, E], target_mean / target_var [b, Q, E], scale / bias scalars;
        matched_sigma / mismatched_sigma [b, Q, E] multimodal sigmas (coordination term);
        target_caption [b, E] (caption term)."""
        if target_mean.dim() != 3:
            raise ValueError(
                f"loss=hug compares token embeddings [B, Q, E]; the targets are {tuple(target_mean.shape)} "
                "(a token-mean store: extract it with tokens, data.store_mean_tokens=false / no --mean-tokens)"
            )
        with torch.autocast(query_mean.device.type, enabled=False):  # distances of ~Q x E terms: fp32, not bf16
            return self._losses(query_mean, query_var, target_mean, target_var, scale, bias, matched_sigma, mismatched_sigma, target_caption)

    def _losses(self, query_mean, query_var, target_mean, target_var, scale, bias, matched_sigma, mismatched_sigma, target_caption) -> dict[str, Tensor]:
        mu_q, var_q = gather_with_grad(query_mean.float()), gather_with_grad(query_var.float())
        mu_c, var_c = gather_with_grad(target_mean.float()), gather_with_grad(target_var.float())
        scale, bias = scale.float(), bias.float()
        losses = {
            "holistic": holistic_loss(gaussian_distance(mu_q, var_q, mu_c, var_c), scale, bias),
            "fine_grained": fine_grained_loss(mu_q, mu_c, self.fine_grained_tau),
        }
        total = self.holistic_weight * losses["holistic"] + self.fine_grained_weight * losses["fine_grained"]
        if self.coordination_weight and mismatched_sigma is not None:
            losses["coordination"] = coordination_loss(gather_with_grad(matched_sigma.float()), gather_with_grad(mismatched_sigma.float()), self.margin)
            total = total + self.coordination_weight * losses["coordination"]
        if self.caption_weight:
            if target_caption is None:
                raise ValueError("caption_weight > 0 needs target caption features")
            losses["caption"] = hn_nce(pool_tokens(mu_q), gather_with_grad(target_caption.float()), self.alpha, self.beta, self.tau)
            total = total + self.caption_weight * losses["caption"]
        losses["scale"], losses["bias"] = scale.detach(), bias.detach()
        losses["loss"] = total
        return losses
