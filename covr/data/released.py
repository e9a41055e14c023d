"""Released embedding files into covr's embedding stores, with a completeness report.

Formats read (tensors only: every file is loaded with `torch.load(weights_only=True)`):
  per-item files   <folder>/<id>.pth, e.g. CoVR's `<page_dir>/<videoid>.pth`: BLIP-2 [F, 32, 256]
                   (an image: [32, 256]), BLIP [F, 256] (an image: [256]); id = the path below the
                   folder without ".pth"
  all_embs.pt      CIRCO (CoVR's evaluation): {"ids": [COCO image ids], "embs": [N, 32, 256] or [N, 256]}

The store is created with the *expected* ids (a WebVid-CoVR CSV's videos, the COCO image list) or,
without a list, the ids found; ids without a readable file stay unwritten, so `missing_ids()`,
training's skip report and evaluation's missing-target check all see them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from covr.data.embedding_store import EmbeddingStore
from covr.data.errors import EmbeddingStoreError

TOKEN_DIMS = {"blip2": 2, "blip": 1}  # dims of one frame's embedding: [Q, E] or [E]
CHUNK = 256  # rows written at a time


@dataclass
class ImportReport:
    """What an import wrote and what it could not."""

    store: EmbeddingStore
    expected: int
    written: int = 0
    missing: list[str] = field(default_factory=list)  # expected ids with no file / entry
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    extra: int = 0  # files / entries whose id is not expected (left out)

    def summary(self) -> str:
        """One line: counts, and the first missing ids."""
        first = f" (e.g. {', '.join(self.missing[:5])})" if self.missing else ""
        return (
            f"{self.store.path}: {self.written:,} of {self.expected:,} expected ids imported; {len(self.missing):,} missing{first}, "
            f"{len(self.unreadable):,} unreadable, {self.extra:,} not expected (left out)"
        )

    def write(self, path: Path) -> Path:
        """Every missing id and unreadable file, one per line (`missing\\t<id>` / `unreadable\\t<id>\\t<reason>`)."""
        lines = [f"missing\t{i}" for i in self.missing] + [f"unreadable\t{i}\t{r}" for i, r in self.unreadable]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path


def as_frames(tensor: Tensor, family: str, where: str) -> Tensor:
    """One item's embedding as frames [F, *frame] ([F, Q, E] for BLIP-2, [F, E] for BLIP)."""
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
        raise ValueError(f"{where}: expected a float tensor, got {type(tensor).__name__}")
    dims = TOKEN_DIMS[family]
    if tensor.dim() == dims:
        tensor = tensor[None]  # one image = one frame
    if tensor.dim() != dims + 1 or tensor.shape[0] == 0:
        expected = "[F, Q, E] or [Q, E]" if family == "blip2" else "[F, E] or [E]"
        raise ValueError(f"{where}: shape {tuple(tensor.shape)} is not a {family} embedding {expected}")
    return tensor


def per_item_files(folder: str | Path) -> dict[str, Path]:
    """{id: file} of every .pth under `folder` (id = relative path without the suffix)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmbeddingStoreError(f"{folder}: no such folder of .pth embedding files")
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(folder.rglob("*.pth"))}


def read_per_item(files: dict[str, Path], ids: Sequence[str], family: str) -> Iterator[tuple[str, Tensor | None, str | None]]:
    """(id, frames or None, reason) for every id, in order (files loaded weights-only)."""
    for item in ids:
        try:
            yield item, as_frames(torch.load(files[item], map_location="cpu", weights_only=True), family, str(files[item])), None
        except Exception as error:  # unpickling refused, truncated file, wrong shape
            yield item, None, f"{files[item]}: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def read_table(table: dict[str, Tensor], ids: Sequence[str], family: str, where: str) -> Iterator[tuple[str, Tensor | None, str | None]]:
    """(id, frames or None, reason) for every id of an in-memory {id: embedding} table."""
    for item in ids:
        try:
            yield item, as_frames(table[item], family, f"{where}[{item}]"), None
        except ValueError as error:
            yield item, None, str(error)


def read_all_embs(path: str | Path, family: str) -> dict[str, Tensor]:
    """{id (as a string): embedding} from CIRCO's all_embs.pt ({"ids": [...], "embs": [N, ...]})."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
        detail = next((line for line in lines if "WeightsUnpickler error" in line), lines[0])  # torch's message spans lines
        raise EmbeddingStoreError(f"{path}: not a readable weights-only torch file ({type(error).__name__}: {detail})") from None
    if not isinstance(obj, dict) or "ids" not in obj or "embs" not in obj:
        raise EmbeddingStoreError(f"{path}: expected {{'ids': [...], 'embs': tensor}}, got {type(obj).__name__} with keys {list(obj)[:5] if isinstance(obj, dict) else ''}")
    ids, embs = [str(i) for i in obj["ids"]], obj["embs"]
    if not isinstance(embs, Tensor) or len(embs) != len(ids):
        raise EmbeddingStoreError(f"{path}: 'embs' must be a tensor with one row per id ({len(ids)} ids)")
    if len(set(ids)) != len(ids):
        raise EmbeddingStoreError(f"{path}: ids repeat")
    return dict(zip(ids, embs))


def import_frames(
    items: Iterator[tuple[str, Tensor | None, str | None]],
    expected: Sequence[str],
    store_path: str | Path,
    identity: str,
    family: str,
    frame_shape: tuple[int, ...],
    max_frames: int = 15,
    dtype: str = "float16",
    mean_tokens: bool = False,
) -> ImportReport:
    """Write (id, frames, reason) items into a store of the `expected` ids; everything else is reported."""
    shape = frame_shape[1:] if mean_tokens and family == "blip2" else frame_shape
    store = EmbeddingStore.create(store_path, list(expected), identity, shape, max_frames, dtype)
    writer, row_of = store.writer(0), {item: i for i, item in enumerate(expected)}
    report = ImportReport(store, len(expected))
    found: set[str] = set()
    batch: list[tuple[int, Tensor]] = []

    def flush() -> None:
        if batch:
            frames = max(t.shape[0] for _, t in batch)
            values = np.zeros((len(batch), frames, *shape), dtype=np.float32)
            for j, (_, t) in enumerate(batch):
                values[j, : t.shape[0]] = t.float().numpy()
            writer.write([r for r, _ in batch], values, [t.shape[0] for _, t in batch])
            report.written += len(batch)
            batch.clear()

    for item, tensor, reason in items:
        found.add(item)
        if reason is not None:
            report.unreadable.append((item, reason))
            continue
        tensor = tensor.mean(dim=1) if mean_tokens and family == "blip2" else tensor
        if tuple(tensor.shape[1:]) != tuple(shape) or tensor.shape[0] > max_frames:
            report.unreadable.append((item, f"shape {tuple(tensor.shape)} does not fit frames <= {max_frames} x {tuple(shape)}"))
            continue
        batch.append((row_of[item], tensor))
        if len(batch) >= CHUNK:
            flush()
    flush()
    report.missing = [item for item in expected if item not in found]
    return report
