"""X-Aligner: stacked residual blocks that progressively fuse the reference video's frames, the
modification text and the reference video's caption into the composed query.

    z0 [B, Q, H]  aligner tokens (default: the Q-Former's joint query+edit outputs = CoVR-2's query)
    for each block b, for each source s in schedule[b]:        (default order visual -> caption -> text)
        z = z + a_bs * CrossAttn_bs(LN(z), memory_s)            memory_s [B, M_s, D_s], key mask [B, M_s]
    then   z = z + a_b * SelfAttn_b(LN(z))                      (optional)
           z = z + a_b' * FFN_b(LN(z))
    out = normalize(proj(z)) [B, Q, E]                          proj starts as a copy of text_proj

Every residual branch starts at exactly zero, so an untrained X-Aligner returns exactly the CoVR-2
query and training starts from the baseline. Two ways (`residual`):
  gate    a = tanh(g) with a scalar g = gate_init = 0 (Flamingo's gated cross-attention; the
          default). Only g gets gradient at the first step, and Adam moves a scalar by about its
          learning rate per step: at the recipe's lr 1e-4 the branches would stay nearly shut for
          a whole run, so the gates train at their own, larger lr (optim.gate_lr_scale, 100x).
  output  the last linear layer of every branch is zero-initialised and a = 1. Its weights get
          gradient at the first step and open the branch as a whole matrix.
See README "X-Aligner", "Branches that open", for the ablation that chose the default.

Memories: visual = per-frame tokens of all sampled reference frames plus a learned frame
embedding; text = edit-text token states; caption = caption token states (samples without a
caption skip the caption updates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

SOURCES = ("visual", "text", "caption")
RESIDUALS = ("output", "gate")


@dataclass
class XAlignerConfig:
    """Architecture of X-Aligner (all values are config options, see conf/model/head/xaligner.yaml)."""

    num_blocks: int = 2
    width: int | None = None  # attention width; None = the backbone's hidden size
    num_heads: int = 12
    order: list[str] = field(default_factory=lambda: ["visual", "caption", "text"])
    schedule: list[list[str]] | None = None  # per-block sources; overrides `order` x num_blocks
    visual_memory: str = "queries"  # "queries": per-frame Q-Former outputs; "patches": ViT tokens
    use_caption: bool = True
    init: str = "joint"  # "joint": from the Q-Former's joint query+edit outputs; "learned"
    self_attention: bool = True
    ffn_ratio: float = 4.0
    dropout: float = 0.0
    residual: str = "gate"  # how each branch starts at zero: "gate" (tanh(g), g = gate_init) or "output" (zero last layer)
    gate_init: float = 0.0  # residual="gate" only; 0 keeps the untrained X-Aligner equal to CoVR-2
    max_frames: int = 32

    def block_sources(self) -> list[list[str]]:
        schedule = self.schedule or [list(self.order) for _ in range(self.num_blocks)]
        for sources in schedule:
            for s in sources:
                if s not in SOURCES:
                    raise ValueError(f"X-Aligner source {s!r} is not one of {SOURCES}")
        if self.residual not in RESIDUALS:
            raise ValueError(f"X-Aligner residual {self.residual!r} is not one of {RESIDUALS}")
        if not self.use_caption:
            schedule = [[s for s in sources if s != "caption"] for sources in schedule]
        return schedule


class CrossAttention(nn.Module):
    """Multi-head attention from aligner tokens [B, Q, H] to a memory [B, M, Dm] (pre-normalised)."""

    def __init__(self, dim: int, memory_dim: int, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"X-Aligner width {width} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, width)
        self.kv = nn.Linear(memory_dim, 2 * width)
        self.out = nn.Linear(width, dim)

    def forward(self, x: Tensor, memory: Tensor, mask: Tensor | None) -> Tensor:
        b, q_len, _ = x.shape
        q = self.q(self.norm(x)).view(b, q_len, self.heads, -1).transpose(1, 2)  # [B, h, Q, d]
        k, v = self.kv(memory).view(b, memory.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # [B, h, M, d]
        attn_mask = None if mask is None else mask[:, None, None, :]  # True = attend
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(b, q_len, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, ratio: float, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, int(dim * ratio)), nn.GELU(), nn.Dropout(dropout), nn.Linear(int(dim * ratio), dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AlignerBlock(nn.Module):
    """One progressive-fusion step: a residual cross-attention to each scheduled source, then
    optional residual self-attention among the aligner tokens and a residual feed-forward."""

    def __init__(self, sources: list[str], dim: int, memory_dims: dict[str, int], cfg: XAlignerConfig):
        super().__init__()
        width = cfg.width or dim
        self.sources = list(sources)
        self.cross = nn.ModuleDict({s: CrossAttention(dim, memory_dims[s], width, cfg.num_heads, cfg.dropout) for s in sources})
        self.self_attn = CrossAttention(dim, dim, width, cfg.num_heads, cfg.dropout) if cfg.self_attention else None
        self.ffn = FeedForward(dim, cfg.ffn_ratio, cfg.dropout)
        self.gates: nn.ParameterDict | None = None
        if cfg.residual == "gate":
            self.gates = nn.ParameterDict({n: nn.Parameter(torch.tensor(float(cfg.gate_init))) for n in self.output_layers()})
        else:
            for layer in self.output_layers().values():
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.stats: dict[str, Tensor] | None = None  # set by XAligner to collect update norms

    def output_layers(self) -> dict[str, nn.Linear]:
        """The last linear layer of each residual branch, by branch name (source, "self", "ffn")."""
        out = {s: self.cross[s].out for s in self.sources}
        if self.self_attn is not None:
            out["self"] = self.self_attn.out
        out["ffn"] = self.ffn.net[-1]
        return out

    def _add(self, z: Tensor, name: str, update: Tensor) -> Tensor:
        if self.gates is not None:
            update = torch.tanh(self.gates[name]) * update
        if self.stats is not None:  # mean token norm of the update (a monitoring figure, no gradient)
            self.stats[name] = update.detach().float().norm(dim=-1).mean()
        return z + update

    def forward(self, z: Tensor, memories: dict[str, tuple[Tensor, Tensor | None, Tensor | None]]) -> Tensor:
        for s in self.sources:
            memory, mask, present = memories[s]
            update = self.cross[s](z, memory, mask)
            if present is not None:  # samples without this input (e.g. no caption) get no update
                update = update * present[:, None, None].to(update.dtype)
            z = self._add(z, s, update)
        if self.self_attn is not None:
            normed = self.self_attn.norm(z)
            z = self._add(z, "self", self.self_attn(z, normed, None))
        return self._add(z, "ffn", self.ffn(z))


class XAligner(nn.Module):
    """The stacked aligner with its own output projection to the retrieval space."""

    def __init__(self, cfg: XAlignerConfig, dim: int, visual_dim: int, embed_dim: int, num_tokens: int):
        super().__init__()
        self.cfg = cfg
        schedule = cfg.block_sources()
        used = sorted({s for sources in schedule for s in sources})
        memory_dims = {"visual": visual_dim, "text": dim, "caption": dim}
        self.memory_norms = nn.ModuleDict({s: nn.LayerNorm(memory_dims[s]) for s in used})
        self.frame_embedding = nn.Parameter(torch.randn(cfg.max_frames, visual_dim) * 0.02)
        self.blocks = nn.ModuleList([AlignerBlock(sources, dim, memory_dims, cfg) for sources in schedule])
        self.learned_tokens = nn.Parameter(torch.randn(num_tokens, dim) * 0.02) if cfg.init == "learned" else None
        if cfg.init not in ("joint", "learned"):
            raise ValueError(f"X-Aligner init {cfg.init!r} is not 'joint' or 'learned'")
        self.proj = nn.Linear(dim, embed_dim)
        self.gradient_checkpointing = False  # recompute each block's activations in backward
        self.record_stats = False  # True: each forward leaves update norms and gates in `stats`
        self.stats: dict[str, Tensor] = {}

    @property
    def sources(self) -> set[str]:
        return set(self.memory_norms.keys())

    def init_projection(self, text_projection: nn.Linear) -> None:
        """Start the output head as a copy of the backbone's query head (text_proj)."""
        with torch.no_grad():
            self.proj.weight.copy_(text_projection.weight)
            self.proj.bias.copy_(text_projection.bias)

    def visual_memory(self, tokens: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, F, T, Dv] per-frame tokens + frame mask [B, F] -> memory [B, F*T, Dv], key mask [B, F*T]."""
        b, f, t, _ = tokens.shape
        if f > self.cfg.max_frames:
            raise ValueError(f"{f} reference frames exceed X-Aligner max_frames={self.cfg.max_frames}")
        memory = self.memory_norms["visual"](tokens) + self.frame_embedding[:f][None, :, None, :]
        return memory.reshape(b, f * t, -1), frame_mask[:, :, None].expand(b, f, t).reshape(b, f * t)

    def forward(
        self,
        init_tokens: Tensor,
        visual: tuple[Tensor, Tensor] | None,
        text: tuple[Tensor, Tensor] | None,
        caption: tuple[Tensor, Tensor, Tensor] | None,
    ) -> Tensor:
        """init_tokens [B, Q, H]; visual = (frame tokens [B, F, T, Dv], frame mask [B, F] bool);
        text = (states [B, L, H], mask [B, L] bool); caption = (states, mask, present [B] bool).
        Returns the composed query [B, Q, E], per-token L2-normalised."""
        z = init_tokens if self.learned_tokens is None else self.learned_tokens.expand(init_tokens.shape[0], -1, -1)
        memories: dict[str, tuple[Tensor, Tensor | None, Tensor | None]] = {}
        if "visual" in self.sources:
            memories["visual"] = (*self.visual_memory(*visual), None)
        if "text" in self.sources:
            memories["text"] = (self.memory_norms["text"](text[0]), text[1], None)
        if "caption" in self.sources:
            states, mask, present = caption
            mask = mask.clone()
            mask[:, 0] = True  # rows without a caption still need one key; their update is zeroed
            memories["caption"] = (self.memory_norms["caption"](states), mask, present)
        z0 = z
        for block in self.blocks:
            block.stats = {} if self.record_stats else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                z = checkpoint(block, z, memories, use_reentrant=False)  # RNG state preserved: same dropout
            else:
                z = block(z, memories)
        if self.record_stats:
            self.stats = self._collect_stats(z0, z)
        return F.normalize(self.proj(z), dim=-1)

    def _collect_stats(self, z0: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Monitoring figures of the last forward, relative to the mean token norm of z0:
        `update/b{i}.{branch}` (each residual update), `shift` (z - z0 after all blocks), and
        `gate/b{i}.{branch}` = tanh(g) for residual="gate"."""
        scale = z0.detach().float().norm(dim=-1).mean().clamp_min(1e-12)
        out = {"shift": (z - z0).detach().float().norm(dim=-1).mean() / scale}
        for i, block in enumerate(self.blocks):
            out.update({f"update/b{i}.{name}": value / scale for name, value in (block.stats or {}).items()})
            if block.gates is not None:
                out.update({f"gate/b{i}.{name}": torch.tanh(g.detach()) for name, g in block.gates.items()})
            block.stats = None
        return out
