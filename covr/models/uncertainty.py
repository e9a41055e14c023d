"""HUG's uncertainty heads (arXiv 2601.11393): a variance for every query token and every target
token, so that retrieval and the `hug` loss (covr.losses.hug) can compare Gaussians.

    g_V  image-only tokens   [B, Q, E]  the reference frame's target-space tokens; the same head
                                        gives the targets' (gallery) variances
    g_T  text tokens         [B, L, E]  the edit's text-only token states, text projection,
                                        normalised; pooled over real tokens to [B, 1, E] (the text
                                        has L tokens, the query Q: one text sigma for every query token)
    g_M  multimodal tokens   [B, Q, E]  the composed query itself (X-Aligner's output when it is on)
    each head: one pre-norm transformer layer over the component's tokens, then
               Linear -> GELU -> Linear -> Softplus per token: sigma > 0, [.., E]

The heads work in the E-wide embedding space (256 for BLIP-2) rather than on Q-Former hidden
states, so a target's variance needs nothing but its stored embedding: precomputed embedding
stores and cached galleries keep working. `scale` and `bias` are the holistic loss's learned a
(init 1) and b (init 0): they live here so that they train and are saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class GaussianQuery:
    """A composed query as a Gaussian: mean [B, Q, E] (the query `encode_query` returns), variance
    s_q^2 [B, Q, E] (dynamic weighting of the components), and the multimodal sigma [B, Q, E] of
    the query and, when asked for, of the query with another row's text (HUG's coordination term)."""

    mean: Tensor
    variance: Tensor
    multimodal_sigma: Tensor
    mismatched_sigma: Tensor | None = None


@dataclass
class UncertaintyConfig:
    """Sizes of the uncertainty heads (conf/loss/hug.yaml sets them as `model.uncertainty`)."""

    num_heads: int = 4  # attention heads of each head's transformer layer (must divide E)
    ffn_ratio: float = 2.0  # that layer's feed-forward width / E
    hidden_ratio: float = 1.0  # the Linear-GELU-Linear hidden width / E
    dropout: float = 0.0


class UncertaintyHead(nn.Module):
    """tokens [B, n, E] (+ key mask [B, n], True = real) -> sigma [B, n, E] > 0."""

    def __init__(self, dim: int, cfg: UncertaintyConfig):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, cfg.num_heads, int(dim * cfg.ffn_ratio), cfg.dropout, activation="gelu",
                                                batch_first=True, norm_first=True)  # fmt: skip
        hidden = int(dim * cfg.hidden_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Softplus())

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        padding = None if mask is None else ~mask.bool()
        return self.mlp(self.layer(tokens, src_key_padding_mask=padding))


class UncertaintyHeads(nn.Module):
    """g_V, g_T, g_M and the holistic loss's scale / bias (see the module docstring)."""

    def __init__(self, dim: int, cfg: UncertaintyConfig | None = None):
        super().__init__()
        self.cfg = cfg or UncertaintyConfig()
        self.image = UncertaintyHead(dim, self.cfg)
        self.text = UncertaintyHead(dim, self.cfg)
        self.multimodal = UncertaintyHead(dim, self.cfg)
        self.scale = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def text_sigma(self, text_tokens: Tensor, text_mask: Tensor) -> Tensor:
        """[B, L, E] with mask [B, L] -> [B, 1, E]: the mean sigma over real text tokens."""
        sigma = self.text(text_tokens, text_mask)
        weights = text_mask.to(sigma.dtype)[..., None]
        return (sigma * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp_min(1.0)

    @staticmethod
    def combined_variance(sigmas: list[Tensor]) -> Tensor:
        """Dynamic weighting per element of component sigmas (each broadcastable to [B, Q, E]):
        w_k = exp(-s_k^2) / sum_j exp(-s_j^2), s_q^2 = sum_k w_k s_k^2."""
        variances = torch.stack(torch.broadcast_tensors(*[s.square() for s in sigmas]))  # [K, B, Q, E]
        return (torch.softmax(-variances, dim=0) * variances).sum(dim=0)

    def query_variance(self, image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor, query_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(s_q^2 [B, Q, E], multimodal sigma [B, Q, E]) from the reference frame's image-only tokens
        [B, Q, E], the edit's text tokens [B, L, E] with mask [B, L] and the composed query [B, Q, E]."""
        multimodal = self.multimodal(query_tokens)
        variance = self.combined_variance([self.image(image_tokens), self.text_sigma(text_tokens, text_mask), multimodal])
        return variance, multimodal

    def target_variance(self, tokens: Tensor) -> Tensor:
        """Variance sigma^2 [N, Q, E] of target tokens [N, Q, E] (g_V, the head the image side shares)."""
        return self.image(tokens).square()
