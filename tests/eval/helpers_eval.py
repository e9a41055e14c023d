"""Test helpers for covr.eval: a deterministic tiny retriever, fixture layouts, brute-force references."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from covr.data.transforms import TestTransform
from covr.similarity import pool_frames


class ColourRetriever(nn.Module):
    """Each frame embeds its mean / std colour; queries add a hash of the edit text (and caption).

    Implements exactly the retriever interface the evaluator uses (encode_query,
    encode_target_frames; encode_target pools frames as ComposedRetriever does); counts encode
    calls and records what the queries saw (texts, captions, frame counts).
    """

    image_size = 8

    def __init__(self, identity: str = "colour-v1", tokens: int = 2, dim: int = 8) -> None:
        super().__init__()
        self.identity, self.tokens, self.dim = identity, tokens, dim
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(6, tokens * dim, generator=generator))
        self.calls: Counter = Counter()
        self.captions_seen: list[str] = []
        self.texts_seen: list[str] = []
        self.query_frames_seen: list[int] = []

    def _features(self, frames: Tensor, frame_mask: Tensor | None) -> Tensor:
        # frames [B, F, 3, H, W] -> [B, 6]: mean and std colour over real frames
        mask = torch.ones(frames.shape[:2], dtype=torch.bool) if frame_mask is None else frame_mask
        weights = mask.float() / mask.float().sum(1, keepdim=True)
        per_frame = torch.cat([frames.mean(dim=(3, 4)), frames.std(dim=(3, 4))], dim=2)  # [B, F, 6]
        return (per_frame * weights[..., None]).sum(1)

    def _tokens(self, features: Tensor) -> Tensor:
        return F.normalize((features @ self.projection).view(-1, self.tokens, self.dim), dim=-1)  # [B, Q, E]

    def encode_target_frames(self, frames: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """[B, F, 3, H, W] -> per-frame tokens [B, F, Q, E] (zeros at padded frames)."""
        self.calls["target"] += frames.shape[0]
        b, f = frames.shape[:2]
        per_frame = self._tokens(self._features(frames.flatten(0, 1)[:, None], None)).view(b, f, self.tokens, self.dim)
        return per_frame if frame_mask is None else per_frame * frame_mask[..., None, None]

    def encode_target(self, frames: Tensor, frame_weights: Tensor | None = None, frame_mask: Tensor | None = None) -> Tensor:
        if frames.dim() == 4:
            frames = frames[:, None]
        return pool_frames(self.encode_target_frames(frames, frame_mask), frame_weights, frame_mask)

    def encode_query(self, frames: Tensor, edit_text: list[str], caption: list[str] | None = None, frame_mask: Tensor | None = None) -> Tensor:
        self.calls["query"] += frames.shape[0]
        self.texts_seen += list(edit_text)
        self.query_frames_seen += (frame_mask.sum(1).tolist() if frame_mask is not None else [frames.shape[1]] * frames.shape[0])
        if caption is not None:
            self.captions_seen += caption
        texts = [t + "|" + (caption[i] if caption is not None else "") for i, t in enumerate(edit_text)]
        return self._tokens(self._features(frames, frame_mask) + 0.7 * text_vector(texts))


def text_vector(texts: list[str]) -> Tensor:
    """[B, 6] deterministic pseudo-embedding of strings in [-1, 1]."""
    rows = [[b / 127.5 - 1.0 for b in hashlib.sha256(t.encode()).digest()[:6]] for t in texts]
    return torch.tensor(rows, dtype=torch.float32)


def write_image(path: Path, rng: np.random.Generator, size: tuple[int, int] = (10, 8)) -> None:
    """A small random-colour image (PNG or JPEG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 40, size=(size[1], size[0], 3))
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# --- brute-force reference, written without covr.eval ---------------------------------------


def load_tensor(path: Path, size: int) -> Tensor:
    """One image as [1, 1, 3, size, size] (a one-frame video batch of one)."""
    with Image.open(path) as image:
        return TestTransform(size)(np.array(image.convert("RGB"))[None])[None]


def brute_force_rankings(
    retriever, gallery: list[tuple[str, Path]], queries: list[dict], mode: str, loader=load_tensor, query_loader=None
) -> list[list[str]]:
    """Full ranking (ids, best first, excluded ids removed) of every query, one item at a time.

    gallery: (id, path) of readable items; queries: {"path", "text", "caption", "exclude"}.
    mode: "mean" (token means), "max_target_token" (query mean vs each target token) or
    "max_token_pair" (every query token vs every target token). Ties go to the lower gallery position.
    """
    size = retriever.image_size
    query_loader = query_loader or loader
    with torch.no_grad():
        g = [retriever.encode_target(loader(p, size))[0] for _, p in gallery]  # each [Q, E]
        rankings = []
        for q in queries:
            caption = [q["caption"]] if q.get("caption") is not None else None
            qt = retriever.encode_query(query_loader(q["path"], size), [q["text"]], caption)[0]  # [Q, E]
            qv = qt.mean(0)
            if mode == "mean":
                scores = [float(qv @ t.mean(0)) for t in g]
            elif mode == "max_target_token":
                scores = [float((t @ qv).max()) for t in g]
            else:
                scores = [max(float(a @ b) for a in qt for b in t) for t in g]
            order = sorted(range(len(g)), key=lambda i: (-scores[i], i))
            rankings.append([gallery[i][0] for i in order if gallery[i][0] not in q.get("exclude", ())])
    return rankings


def ref_recall(rankings, targets, k) -> float:
    return 100.0 * np.mean([t in r[:k] for r, t in zip(rankings, targets)])


def ref_map(rankings, ground_truths, k) -> float:
    aps = []
    for r, gts in zip(rankings, ground_truths):
        rel = np.array([x in gts for x in r[:k]], dtype=float)
        precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append(float((precision * rel).sum() / min(len(gts), k)))
    return 100.0 * float(np.mean(aps))
