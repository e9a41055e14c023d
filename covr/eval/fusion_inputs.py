"""Artifacts keyed by id, turned into embeddings in the retriever's space, for score fusion and
SoFT (covr.eval.rerank). A source is one of:

  <file>.npz          arrays `ids` [M] (strings) and `embeddings` [M, E] or [M, Q, E] (token mean
                      taken): precomputed E_I / E_T vectors of the same model (np.load without pickle)
  <file>.json/.jsonl  texts, encoded with the retriever's text encoder E_T (`encode_text`), cleaned as
                      the benchmark's query texts are: JSON {id: text | [texts]}, or JSONL lines
                      {"id": ..., "text": ... | "texts": [...]}
  <folder>            images (or videos) named <id>.<suffix>, encoded with the target encoder E_I
and, by name, what the evaluator already has: "text" (each query's own text through E_T), "query"
(the composed query), "reference" (each query's reference through E_I), "image" (the gallery item).
An id a source lacks is an error naming the file and the id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from covr.data.errors import AnnotationError
from covr.data.jsonl import read_jsonl
from covr.data.video import IMAGE_SUFFIXES
from covr.eval.datasets.base import Query, read_json
from covr.eval.encoding import FrameOptions, encode_gallery
from covr.similarity import pool_tokens

MEDIA_SUFFIXES = tuple(IMAGE_SUFFIXES) + (".mp4", ".webm", ".mkv", ".avi", ".mov")


@dataclass
class Encoders:
    """What artifacts are encoded with: the retriever, where, in what batches, and the text rule."""

    retriever: nn.Module
    device: torch.device
    batch_size: int = 32
    num_workers: int = 0
    clean: Callable[[str], str] = str
    dim: int | None = None  # E, for a batch of texts that are all empty

    def texts(self, texts: Sequence[str], dim: int | None = None) -> Tensor:
        """E_T of each text [M, E] (cleaned; an empty text gives a zero row: no constraint; `dim` is
        E when every text may be empty)."""
        if not hasattr(self.retriever, "encode_text"):
            raise ValueError(f"{type(self.retriever).__name__} has no text encoder (encode_text): text artifacts need one")
        cleaned = [self.clean(t) for t in texts]
        present = [i for i, t in enumerate(cleaned) if t.strip()]
        out: Tensor | None = None
        for start in range(0, len(present), self.batch_size):
            rows = present[start : start + self.batch_size]
            encoded = self.retriever.encode_text([cleaned[i] for i in rows]).float().to(self.device)  # [b, E]
            if out is None:
                out = encoded.new_zeros(len(texts), encoded.shape[-1])
            out[torch.tensor(rows, device=self.device)] = encoded
        return out if out is not None else torch.zeros(len(texts), dim or self.dim or 1, device=self.device)

    def media(self, ids: Sequence[str], paths: Sequence[Any], what: str) -> Tensor:
        """E_I of each file [M, E]: the target encoder's token mean of an image (a video's middle frame)."""
        frames = FrameOptions(int(self.retriever.image_size), 1, "middle", self.batch_size, self.num_workers)
        encoded = encode_gallery(self.retriever, ids, paths, frames, "mean", False, self.device, description=what)
        if encoded.skipped:
            item, reason = encoded.skipped[0]
            raise AnnotationError(f"{what}: {item} cannot be read ({reason}); {len(encoded.skipped)} file(s) failed")
        return encoded.embeddings.float().to(self.device)


def read_embeddings(path: Path) -> dict[str, np.ndarray]:
    """{id: [E] vector} from an .npz with `ids` and `embeddings` ([M, E] or [M, Q, E]: token mean)."""
    if not path.is_file():
        raise AnnotationError(f"{path}: embedding file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "ids" not in data or "embeddings" not in data:
                raise AnnotationError(f"{path}: expected arrays 'ids' and 'embeddings', found {sorted(data.files)}")
            ids, values = [str(i) for i in data["ids"]], np.asarray(data["embeddings"], dtype=np.float32)
    except (ValueError, OSError) as error:
        raise AnnotationError(f"{path}: not a readable .npz ({error})") from error
    if values.ndim == 3:
        values = values.mean(axis=1)
    if values.ndim != 2 or values.shape[0] != len(ids):
        raise AnnotationError(f"{path}: 'embeddings' must be [M, E] or [M, Q, E] with M = {len(ids)} ids, got {values.shape}")
    return dict(zip(ids, values))


def read_texts(path: Path) -> dict[str, list[str]]:
    """{id: [texts]} from JSON {id: text | [texts]} or JSONL {"id", "text" | "texts"} lines."""
    if path.suffix == ".jsonl":
        entries = []
        for number, entry in read_jsonl(path, "text file"):
            if "id" not in entry:
                raise AnnotationError(f"{path}: line {number}: expected {{'id': ..., 'text': ...}}: {json.dumps(entry)[:200]}")
            entries.append((str(entry["id"]), entry.get("texts", entry.get("text")), f"line {number}"))
    else:
        data = read_json(path)
        if not isinstance(data, dict):
            raise AnnotationError(f"{path}: expected a JSON object {{id: text}}")
        entries = [(str(k), v, f"entry {k!r}") for k, v in data.items()]
    table = {}
    for key, value, where in entries:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise AnnotationError(f"{path}: {where}: expected a text or a list of texts, got {value!r}"[:300])
        table[key] = texts
    return table


def _media_files(folder: Path) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in MEDIA_SUFFIXES}
    if not files:
        raise AnnotationError(f"{folder}: no image or video files")
    return files


def _rows(table: Mapping[str, Any], ids: Sequence[str], path: Path, what: str) -> list[Any]:
    missing = [i for i in dict.fromkeys(ids) if i not in table]
    if missing:
        raise AnnotationError(f"{path}: no {what} for id {missing[0]!r} ({len(missing)} of {len(set(ids))} ids missing)")
    return [table[i] for i in ids]


def file_vectors(encoders: Encoders, source: str | Path, ids: Sequence[str], what: str) -> Tensor:
    """[M, E] vectors of `ids` from a file source (.npz, texts, or a media folder). A text entry
    with several texts gives their mean feature (use `file_text_lists` to keep them apart)."""
    path = Path(source)
    if path.is_dir():
        files = _media_files(path)
        unique = list(dict.fromkeys(ids))
        encoded = encoders.media(unique, _rows(files, unique, path, what), f"{what} ({path})")  # each file once
        position = {i: row for row, i in enumerate(unique)}
        return encoded[torch.tensor([position[i] for i in ids], dtype=torch.long, device=encoded.device)]
    if path.suffix == ".npz":
        rows = _rows(read_embeddings(path), ids, path, what)
        return torch.from_numpy(np.stack(rows)).to(encoders.device) if rows else torch.zeros(0, 1, device=encoders.device)
    if path.suffix in (".json", ".jsonl"):
        lists = file_text_lists(encoders, path, ids, what)
        return lists[0].sum(1) / lists[1].sum(1, keepdim=True).clamp(min=1)
    raise AnnotationError(f"{path}: a {what} source is an .npz, a .json / .jsonl text file or a folder of images")


def file_text_lists(encoders: Encoders, path: Path, ids: Sequence[str], what: str) -> tuple[Tensor, Tensor]:
    """Texts of `ids` (several per id allowed) -> ([M, V, E] features, zero-padded; [M, V] bool valid)."""
    lists = _rows(read_texts(Path(path)), ids, Path(path), what)
    width = max((len(t) for t in lists), default=0) or 1
    flat = [t for texts in lists for t in texts]
    encoded = encoders.texts(flat)
    out = encoded.new_zeros(len(ids), width, encoded.shape[-1])
    valid = torch.zeros(len(ids), width, dtype=torch.bool, device=encoded.device)
    row = 0
    for i, texts in enumerate(lists):
        for v in range(len(texts)):
            out[i, v], valid[i, v] = encoded[row], bool(encoders.clean(texts[v]).strip())
            row += 1
    return out, valid


def query_vectors(encoders: Encoders, source: str, queries: Sequence[Query], query_tokens: Tensor) -> Tensor:
    """[B, E] per-query vectors of a source: "text", "query", "reference" or a file keyed by query id."""
    if source == "text":
        return encoders.texts([q.text for q in queries])
    if source == "query":
        return pool_tokens(query_tokens.float())
    if source == "reference":
        rows = [i for i, q in enumerate(queries) if q.reference_path is not None]
        encoded = encoders.media([queries[i].reference for i in rows], [queries[i].reference_path for i in rows], "references")
        out = encoded.new_zeros(len(queries), encoded.shape[-1])  # a text-only query has no reference term
        out[torch.tensor(rows, dtype=torch.long, device=out.device)] = encoded
        return out
    return _checked(file_vectors(encoders, source, [q.id for q in queries], "query artifact"), query_tokens.shape[-1], source)


def gallery_vectors(encoders: Encoders, source: str, items: Sequence[str], column_embeddings: Tensor) -> Tensor:
    """[C, E] per-column vectors of a source: "image" (the gallery embedding) or a file keyed by gallery id."""
    if source == "image":
        return pool_tokens(column_embeddings.float()).to(encoders.device)
    return _checked(file_vectors(encoders, source, list(items), "gallery artifact"), column_embeddings.shape[-1], source)


def _checked(vectors: Tensor, dim: int, source: str) -> Tensor:
    """`vectors` when they live in the retriever's E-dimensional space, else a one-line error."""
    if vectors.shape[-1] != dim:
        raise AnnotationError(f"{source}: embeddings of size {vectors.shape[-1]}, but the retriever's are {dim}: encode them with the same model")
    return vectors
