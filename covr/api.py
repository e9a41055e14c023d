"""One-call inference: `covr.load(...)`, then encode queries and a gallery from file paths and search.

    model = covr.load("models/toy")                      # covr folder / .ckpt / .pth / hub id
    gallery = model.encode_gallery(video_paths)          # 15 uniform frames per video, pooled
    query = model.encode_query("ref.mp4", "make it red") # the reference's middle frame + the edit
    model.search(query, gallery, k=10)                   # [(path, score), ...] best first

Videos and images are both accepted everywhere (an image is a one-frame video). Texts are cleaned as
in training and evaluation (`covr.data.text.clean_text`, CoVR's pre_caption) unless
`clean_text=False`; a query takes as many reference frames as its checkpoint was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from covr.data.collate import pad_frames
from covr.data.text import clean_text as clean
from covr.data.transforms import TestTransform
from covr.data.video import load_frames
from covr.models.checkpoint_io import trust_checkpoints
from covr.models.loading import load_model
from covr.models.retriever import ComposedRetriever
from covr.similarity import SimilarityMode, similarity

PathLike = str | Path


@dataclass
class EncodedGallery:
    """What `Retriever.search` ranks: file paths and their target embeddings [N, Q, E] (CPU), in the
    same order (`Retriever.encode_gallery` makes one)."""

    paths: list[str]
    embeddings: Tensor

    def __len__(self) -> int:
        return len(self.paths)


class Retriever:
    """A loaded retriever with file-path level encode / search methods (no gradients, eval mode).

    clean_text: clean edit texts and captions as training does (lower case, CoVR's punctuation set
    removed, at most `max_words` words); False passes them to the tokenizer as given."""

    def __init__(self, model: ComposedRetriever, device: str | torch.device | None = None, clean_text: bool = True, max_words: int = 30):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.clean_text, self.max_words = clean_text, max_words

    def _texts(self, texts: list[str] | None) -> list[str] | None:
        if texts is None or not self.clean_text:
            return texts
        return [clean(t, self.max_words) for t in texts]

    def _clips(self, paths: Sequence[PathLike], num_frames: int) -> tuple[Tensor, Tensor]:
        """Decode and transform -> frames [B, F, 3, S, S] (padded) and frame mask [B, F]."""
        strategy = "middle" if num_frames == 1 else "uniform"
        transform = TestTransform(self.model.image_size)  # the preprocessing of training's val / target frames
        frames, mask = pad_frames([transform(load_frames(p, num_frames, strategy)) for p in paths])
        return frames.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def encode_query(
        self,
        reference: PathLike | Sequence[PathLike],
        text: str | Sequence[str],
        caption: str | Sequence[str] | None = None,
        num_frames: int | None = None,
    ) -> Tensor:
        """Composed queries [B, Q, E] from reference videos / images and modification texts.

        num_frames: None = what the checkpoint was trained with (1, the middle frame, when it does not
        say); 1 = the middle frame (CoVR); more = frames at segment middles (X-Aligner's visual memory).
        caption: optional description of each reference ("" or None = none)."""
        refs = [reference] if isinstance(reference, (str, Path)) else list(reference)
        texts = [text] if isinstance(text, str) else list(text)
        captions = None if caption is None else ([caption] if isinstance(caption, str) else list(caption))
        if len(texts) != len(refs):
            raise ValueError(f"{len(texts)} texts for {len(refs)} references")
        trained = getattr(self.model, "query_frames", None) or {}
        frames, mask = self._clips(refs, int(num_frames or trained.get("num_frames") or 1))
        return self.model.encode_query(frames, self._texts(texts), self._texts(captions), frame_mask=mask).cpu()

    @torch.inference_mode()
    def encode_gallery(self, paths: Sequence[PathLike], batch_size: int = 16, num_frames: int = 15) -> EncodedGallery:
        """Target embeddings of videos / images: `num_frames` uniform frames, uniformly pooled."""
        paths = [str(p) for p in paths]
        if not paths:
            raise ValueError("the gallery is empty")
        chunks = []
        for start in range(0, len(paths), batch_size):
            frames, mask = self._clips(paths[start : start + batch_size], num_frames)
            chunks.append(self.model.encode_target(frames, frame_mask=mask).cpu())
        return EncodedGallery(paths, torch.cat(chunks))

    def search(self, query: Tensor, gallery: EncodedGallery, k: int = 10, mode: SimilarityMode = "mean") -> Any:
        """Rank the gallery for each query. A single query ([Q, E] or [1, Q, E]) gives a list of
        (path, score), best first; a batch [B, Q, E] gives one such list per query."""
        single = query.dim() == 2 or query.shape[0] == 1
        queries = query.unsqueeze(0) if query.dim() == 2 else query
        scores = similarity(queries.float(), gallery.embeddings.float(), mode)  # [B, N]
        top = scores.topk(min(k, len(gallery)), dim=1)
        ranked = [[(gallery.paths[j], float(s)) for s, j in zip(row_s, row_i)] for row_s, row_i in zip(top.values, top.indices.tolist())]
        return ranked[0] if single else ranked


def load(
    source: PathLike, device: str | torch.device | None = None, trust_checkpoint: bool = False, clean_text: bool = True, **options: Any
) -> Retriever:
    """Load a retriever from any supported source (covr model folder or checkpoint, transformers
    folder or hub id, LAVIS / CoVR / CoVR-2 file); `options` go to covr.models.loading.load_model
    (family, query_head, image_size, tokenizer, spec, strict, ...). Files are read weights-only;
    `trust_checkpoint=True` allows full unpickling, which runs any code a file carries.
    clean_text: see `Retriever`."""
    with trust_checkpoints(trust_checkpoint):
        return Retriever(load_model(source, **options), device, clean_text)
