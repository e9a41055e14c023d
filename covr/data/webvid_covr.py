"""WebVid-CoVR triplet dataset: (reference video, edit text) -> target video.

Targets come either as decoded frames (``target_source="frames"``) or as precomputed per-frame
embeddings from an ``EmbeddingStore`` (``target_source="store"``, the CoVR training setup).

Bad rows never end a run: rows whose videos are missing or empty, or whose text is unusable (see
covr.data.annotations), are dropped up front; a row whose video fails to decode while training is
*replaced* by another row of the same epoch (drawn from (seed, epoch, position), so the same in
any worker, rank or resumed run), so every batch stays full and every DDP rank runs the same
collectives. All of them are listed once in ``<report_dir>/skipped_<split>.csv``. The test split
refuses bad rows unless ``allow_missing=True``, which drops them (collate_covr skips None items).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from covr.data.annotations import parse_scores, read_webvid_covr_csv, score_problem
from covr.data.embedding_store import EmbeddingStore
from covr.data.errors import CovrDataError, VideoDecodeError
from covr.data.row_checks import check_rows
from covr.data.skips import append_skip
from covr.data.text import clean_text
from covr.data.transforms import TestTransform, build_transform
from covr.data.triplets import with_corrective_triplets
from covr.data.video import IMAGE_SUFFIXES, load_frames, sample_indices
from covr.similarity import score_weights

log = logging.getLogger(__name__)

MAX_REPLACEMENTS = 16  # consecutive undecodable draws for one position before the data is declared broken


class WebVidCoVRDataset(Dataset):
    """One item per unique target (``epoch_mode="unique_targets"``, a fresh triplet each epoch) or per row.

    Item keys: reference_frames float [F, 3, H, W]; edit, reference_caption, target_caption (cleaned
    text); reference_id, target_id; index (CSV row); then target_frames [Ft, 3, H, W] (frames mode)
    or target_embedding [Ft, (Q,) E] in the store dtype (store mode), and target_weights [Ft]
    (softmax(scores / 0.1), uniform when scores are absent or do not match the frame count).
    """

    def __init__(
        self,
        csv_path: str | Path,
        video_root: str | Path,
        split: str = "train",
        num_reference_frames: int = 1,
        reference_sampling: Literal["middle", "uniform", "random"] = "middle",
        target_source: Literal["frames", "store"] = "frames",
        store: EmbeddingStore | str | Path | None = None,
        store_identity: str | None = None,
        caption_store: EmbeddingStore | str | Path | None = None,
        caption_store_identity: str | None = None,
        num_target_frames: int = 15,
        transform: Callable | None = None,
        image_size: int = 224,
        frame_dtype: Literal["float32", "float16", "uint8"] = "float32",
        epoch_mode: Literal["unique_targets", "all_triplets"] | None = None,
        allow_missing: bool = False,
        report_dir: str | Path | None = None,
        seed: int = 0,
        max_words: int = 30,
        video_suffix: str = ".mp4",
        check_files: bool = True,
        corrective_triplets: str | Path | None = None,
    ) -> None:
        """epoch_mode None means "unique_targets" for split "train", "all_triplets" otherwise.

        transform: called as ``transform(uint8 frames [F, H, W, 3], generator=np.random.Generator)``
        -> [F, 3, S, S]; default ``build_transform(split == "train", image_size)``. Target frames
        always get the plain test transform at the same size.
        store / store_identity: the EmbeddingStore (or its folder) and the identity the run
        expects (the retriever's ``target_identity``); a store written by another model is refused.
        caption_store / caption_store_identity: a text store of precomputed target-caption features
        (keyed by the cleaned caption; checked against the retriever's ``text_identity``): items then
        carry target_caption_embedding [E], CoVR-2's frozen caption term.

        frame_dtype: dtype of the frames items carry (float32 / float16 normalised, or uint8 pixels
        for ``to_model_input`` to normalise on the device); applies to the default transform and
        to the target frames.
        corrective_triplets: a JSONL file of extra (reference, edit, target) rows appended to the CSV's
        (covr.data.triplets; ReCALL's corrected texts for mined negatives).
        """
        if target_source not in ("frames", "store"):
            raise ValueError(f"target_source must be 'frames' or 'store', got {target_source!r}")
        self.annotations = with_corrective_triplets(read_webvid_covr_csv(csv_path), corrective_triplets)
        self.video_root, self.split = Path(video_root), split
        self._root = str(video_root)
        self.num_reference_frames, self.reference_sampling = num_reference_frames, reference_sampling
        self.target_source, self.num_target_frames = target_source, num_target_frames
        self.transform = transform if transform is not None else build_transform(split == "train", image_size, output_dtype=frame_dtype)
        self.target_transform = TestTransform(getattr(self.transform, "image_size", image_size), frame_dtype)
        self.allow_missing, self.report_dir, self.seed, self.max_words = allow_missing, report_dir, seed, max_words
        self.video_suffix = video_suffix
        self.epoch_mode = epoch_mode or ("unique_targets" if split == "train" else "all_triplets")
        if self.epoch_mode not in ("unique_targets", "all_triplets"):
            raise ValueError(f"epoch_mode must be 'unique_targets' or 'all_triplets', got {self.epoch_mode!r}")
        self.store = None
        if target_source == "store":
            if store is None:
                raise ValueError("target_source='store' needs store= (an EmbeddingStore or its folder)")
            self.store = store if isinstance(store, EmbeddingStore) else EmbeddingStore.open(store, store_identity)
        self.caption_store = caption_store
        if caption_store is not None and not isinstance(caption_store, EmbeddingStore):
            self.caption_store = EmbeddingStore.open(caption_store, caption_store_identity, kind="text")
        self.replace_bad_samples = split != "test"  # test rows are never swapped: they are the benchmark
        self._bad_videos: set[str] = set()  # known undecodable in this process: not decoded (or reported) again
        self._reported_rows: set[int] = set()
        self.rows, self.skipped = check_rows(
            self.annotations, self.video_path, split, self.store, check_files, allow_missing, report_dir
        )
        self._index_epochs()
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent workers too

    # ---- paths and up-front checks -----------------------------------------------------------
    def video_path(self, video_id: str) -> str:
        """``<video_root>/<page_dir>/<videoid>.mp4`` (ids that already end in a media suffix are kept)."""
        suffix = os.path.splitext(video_id)[1].lower()
        known = suffix in IMAGE_SUFFIXES or suffix == self.video_suffix
        return os.path.join(self._root, video_id if known else video_id + self.video_suffix)  # str: hot path

    # ---- epochs ------------------------------------------------------------------------------
    def _index_epochs(self) -> None:
        """Group kept rows by target: rows of target k are rows[order[starts[k] : starts[k] + counts[k]]]."""
        targets = self.annotations.target[self.rows]
        self._order = np.argsort(targets, kind="stable")
        _, self._starts, self._counts = np.unique(targets[self._order], return_index=True, return_counts=True)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the triplet of each target (unique_targets mode); call before each epoch."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def __len__(self) -> int:
        return len(self._starts) if self.epoch_mode == "unique_targets" else len(self.rows)

    def row_of(self, index: int, epoch: int | None = None) -> int:
        """CSV row served at position ``index`` in the current (or the given) epoch."""
        if self.epoch_mode == "all_triplets":
            return int(self.rows[index])
        epoch = self.epoch if epoch is None else epoch
        pick = np.random.default_rng([self.seed, epoch, index, 1]).integers(self._counts[index])
        return int(self.rows[self._order[self._starts[index] + pick]])

    def target_ids(self) -> list[str]:
        """Target id of every position (the gallery order for a unique-target test split)."""
        return [self.annotations.target_id(self.row_of(i)) for i in range(len(self))]

    # ---- items -------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any] | None:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any] | None]:
        """``[self[i] for i in indices]``, as a DataLoader fetches a batch: every video of the batch
        is decoded first, then the reference clips are transformed together (the transform's
        ``apply_many``, when it has one). Keeping the decoder and the transforms hot in the CPU
        caches, with fewer and larger torch calls, makes a toy sample ~20% cheaper; the items
        are the same as one at a time."""
        epoch = self.epoch
        jobs = []  # (position in the batch, row, generator, decoded frames)
        for position, index in enumerate(indices):
            fetched = self._fetch(index, epoch)
            if fetched is not None:
                jobs.append((position, *fetched))
        clips, generators = [job[3][0] for job in jobs], [job[2] for job in jobs]
        many = getattr(self.transform, "apply_many", None)
        references = many(clips, generators) if many else [self.transform(c, generator=g) for c, g in zip(clips, generators)]
        items: list[dict[str, Any] | None] = [None] * len(indices)
        for (position, row, rng, frames), reference in zip(jobs, references):
            items[position] = self._item(row, rng, reference, frames[1])
        return items

    def _fetch(self, index: int, epoch: int) -> tuple[int, np.random.Generator, tuple] | None:
        """(row, generator, decoded frames) for position `index`: its own row, or, when that row's
        videos do not decode, a replacement row of this epoch (train / val). None: dropped (test)."""
        row = self.row_of(index, epoch)
        for attempt in range(MAX_REPLACEMENTS + 1):
            rng = np.random.default_rng([self.seed, epoch, row, 2])  # same draws in any worker, any batch
            frames = self._decode(row, rng if self.reference_sampling == "random" else None)
            if frames is not None:
                return row, rng, frames
            if not self.replace_bad_samples:
                return None
            replacement = np.random.default_rng([self.seed, epoch, index, 3, attempt]).integers(len(self))
            row = self.row_of(int(replacement), epoch)  # drawn from (seed, epoch, position, attempt) alone
        raise CovrDataError(
            f"{self.annotations.path}: {MAX_REPLACEMENTS + 1} rows drawn in a row for {self.split} position {index} (epoch {epoch}) "
            f"had undecodable videos; the videos under {self._root} look broken (see skipped_{self.split}.csv)"
        )

    def _decode(self, row: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(reference frames, target frames or None in store mode), uint8 [F, H, W, 3]; None = row skipped."""
        ann = self.annotations
        reference_id = ann.reference_id(row)
        if reference_id in self._bad_videos or (self.store is None and ann.target_id(row) in self._bad_videos):
            return self._skip(row, *self._known_bad(row), None)
        try:
            reference = load_frames(self.video_path(reference_id), self.num_reference_frames, self.reference_sampling, rng)
        except VideoDecodeError as error:
            return self._skip(row, reference_id, "pth1", error)
        if self.store is not None:
            return reference, None
        target_id = ann.target_id(row)
        try:
            return reference, load_frames(self.video_path(target_id), self.num_target_frames, "uniform")
        except VideoDecodeError as error:
            return self._skip(row, target_id, "pth2", error)

    def _item(self, row: int, rng: np.random.Generator, reference: torch.Tensor, target: np.ndarray | None) -> dict[str, Any]:
        """The item of a row from its transformed reference frames and (frames mode) decoded target frames."""
        ann = self.annotations
        target_id = ann.target_id(row)
        item: dict[str, Any] = {
            "reference_frames": reference,  # [F, 3, H, W]
            "edit": clean_text(ann.edit[row], self.max_words),
            "reference_caption": clean_text(ann.caption(row, "reference"), self.max_words),
            "target_caption": clean_text(ann.caption(row, "target"), self.max_words),
            "reference_id": ann.reference_id(row),
            "target_id": target_id,
            "index": row,
        }
        scores = self._scores(row)
        if self.caption_store is not None:  # CoVR-2's frozen feature of the target caption [E] (prepare_caption_store checked them all)
            item["target_caption_embedding"] = torch.from_numpy(self.caption_store.get(item["target_caption"])[0][0])
        if target is not None:
            item["target_frames"] = self.target_transform(target)  # [Ft, 3, H, W]
            item["target_weights"] = _frame_weights(scores, len(target), np.arange(len(target)))
            return item
        embeddings, n = self.store.get(target_id)  # [n, (Q,) E]
        if n > self.num_target_frames and self.split == "train":
            chosen = np.sort(rng.choice(n, self.num_target_frames, replace=False))
        elif n > self.num_target_frames:
            chosen = np.asarray(sample_indices(n, self.num_target_frames, "uniform"))
        else:
            chosen = np.arange(n)
        item["target_embedding"] = torch.from_numpy(embeddings[chosen])  # [Ft, (Q,) E]
        item["target_weights"] = _frame_weights(scores, n, chosen)
        return item



    def _scores(self, row: int) -> np.ndarray | None:
        """The row's frame scores; None (uniform weights) when absent, or, with a warning, when a
        list that passed the up-front check does not parse ('1..2', an overflowing 1e999)."""
        if self.annotations.scores is None:
            return None
        text = self.annotations.scores[row]
        scores = parse_scores(text)
        if scores is None and score_problem(text) and row not in self._reported_rows:
            self._reported_rows.add(row)
            log.warning("%s row %d: scores %r do not parse: uniform frame weights", self.annotations.path, row, text[:60])
        return scores

    def _known_bad(self, row: int) -> tuple[str, str]:
        reference_id = self.annotations.reference_id(row)
        return (reference_id, "pth1") if reference_id in self._bad_videos else (self.annotations.target_id(row), "pth2")

    def _skip(self, row: int, video_id: str, field: str, error: VideoDecodeError | None) -> None:
        """Record a row whose video does not decode (once per row per run); None = skip the row."""
        if self.split == "test" and not self.allow_missing:
            reason = error.reason if error is not None else "undecodable"
            raise VideoDecodeError(self.video_path(video_id), f"{reason} (test row {row}, {field}={video_id}; allow_missing=True drops it)")
        if error is not None:  # first time this process meets the video: one warning per video
            self._bad_videos.add(video_id)
            action = "replaced by another row of the epoch" if self.replace_bad_samples else "dropped"
            log.warning("%s row %d (%s=%s) %s: %s", self.split, row, field, video_id, action, error)
        if row not in self._reported_rows:  # the report file dedupes across processes; this saves its lock
            self._reported_rows.add(row)
            append_skip(self.report_dir, self.split, row, video_id, field)
        return None


def _frame_weights(scores: np.ndarray | None, num_frames: int, chosen: np.ndarray) -> torch.Tensor:
    """softmax(scores[chosen] / 0.1) when the score list has one entry per frame, else uniform. -> [len(chosen)]"""
    if scores is None or len(scores) != num_frames:
        return torch.full((len(chosen),), 1.0 / len(chosen))
    return score_weights(torch.from_numpy(scores[chosen]).float()[None])[0]
