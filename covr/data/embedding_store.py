"""On-disk store of per-frame target embeddings (e.g. 131k videos x 15 frames x [32, 256] fp16), or of
target-caption text features (``kind="text"``: one [E] row per cleaned caption, keyed by the text).
Hand-written on purpose, because: numpy memmaps (no new dependency) already give zero-copy random row reads; the code on top is only the shard and resume bookkeeping described below.

Layout of a store folder (format version 1)::

    meta.json   {format_version, identity, kind, frame_shape, dtype, max_frames, num_videos, num_shards, ids_file, ids_sha1}
    ids.txt     one video id per line; global row i = line i
    shard-00000-of-00002/embeddings.npy  [n_k, max_frames, *frame_shape]  (numpy memmap)
                         num_frames.npy  int32 [n_k]  frames written per video (<= max_frames)
                         done.npy        bool [n_k]   rows completely written (resume marker)
    shard-00001-of-00002/...

Sharding: global row i belongs to shard i % num_shards, at local row i // num_shards. Each
writer process owns one shard folder and nothing else, so writers on different nodes never
touch the same file (memmap pages are not coherent across NFS clients); the reader merges the
shards by that arithmetic, without copying. Resuming skips rows whose ``done`` flag is set; a
row's embeddings are flushed before its flag, so a crash never marks a half-written row done.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from covr.data.errors import EmbeddingStoreError

FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
KINDS = ("video", "text")  # per-frame target embeddings, or caption text features (stores without the field: video)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # concurrent writers of identical content: last one wins, harmlessly


def _ids_sha1(ids: list[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest()


class EmbeddingStore:
    """Reader (and factory of shard writers) of one store folder; see the module docstring."""

    def __init__(self, path: str | Path, meta: dict, ids: list[str]) -> None:
        self.path = Path(path)
        self.meta = meta
        self.ids = ids
        self._index = {video_id: i for i, video_id in enumerate(ids)}  # O(1) id lookup
        self._shards: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, expected_identity: str | None = None, kind: str | None = None) -> EmbeddingStore:
        """Open an existing store; refuse one written by a model other than ``expected_identity``, or
        holding another ``kind`` of embeddings than asked for."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise EmbeddingStoreError(f"{path} is not an embedding store (no meta.json); write one with covr-extract-embeddings")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise EmbeddingStoreError(f"store {path} has format version {meta.get('format_version')}, this code reads {FORMAT_VERSION}; re-extract it")
        if expected_identity is not None and meta["identity"] != expected_identity:
            raise EmbeddingStoreError(
                f"store {path} was written by model {meta['identity']!r}, this run uses model {expected_identity!r}; "
                "re-extract the embeddings or pass the store's identity as expected_identity to use it anyway"
            )
        if kind is not None and meta.get("kind", "video") != kind:
            raise EmbeddingStoreError(f"store {path} holds {meta.get('kind', 'video')} embeddings, this run needs {kind} embeddings")
        ids = (path / meta["ids_file"]).read_text(encoding="utf-8").split("\n")[: meta["num_videos"]]
        if len(ids) != meta["num_videos"] or _ids_sha1(ids) != meta["ids_sha1"]:
            raise EmbeddingStoreError(f"store {path}: {meta['ids_file']} does not match meta.json (ids changed after writing?)")
        return cls(path, meta, ids)

    @classmethod
    def create(
        cls,
        path: str | Path,
        ids: list[str],
        identity: str,
        frame_shape: tuple[int, ...],
        max_frames: int,
        dtype: str = "float16",
        num_shards: int = 1,
        kind: str = "video",
    ) -> EmbeddingStore:
        """Create a store, or reopen an existing one after checking that it matches (for resuming)."""
        path = Path(path)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"store ids must be unique; {len(ids) - len(set(ids))} duplicates given")
        if any("\n" in video_id for video_id in ids):
            raise ValueError("store ids must not contain newlines")
        meta = {
            "format_version": FORMAT_VERSION,
            "identity": identity,
            "kind": kind,
            "frame_shape": [int(d) for d in frame_shape],
            "dtype": dtype,
            "max_frames": int(max_frames),
            "num_videos": len(ids),
            "num_shards": int(num_shards),
            "ids_file": "ids.txt",
            "ids_sha1": _ids_sha1(ids),
        }
        if (path / "meta.json").is_file():
            store = cls.open(path, expected_identity=identity, kind=kind)
            for key in ("frame_shape", "dtype", "max_frames", "num_shards", "num_videos", "ids_sha1"):
                if store.meta[key] != meta[key]:
                    raise EmbeddingStoreError(
                        f"store {path} has {key}={store.meta[key]}, this writer uses {meta[key]}; "
                        "resume with the same settings or write to a new folder"
                    )
            return store
        path.mkdir(parents=True, exist_ok=True)
        _write_atomic(path / "ids.txt", "\n".join(ids))
        _write_atomic(path / "meta.json", json.dumps(meta, indent=1))  # written last: marks the store valid
        return cls(path, meta, ids)

    # ---- description ----------------------------------------------------------------------
    identity = property(lambda self: self.meta["identity"])
    kind = property(lambda self: self.meta.get("kind", "video"))
    frame_shape = property(lambda self: tuple(self.meta["frame_shape"]))  # (E,) or (Q, E)
    max_frames = property(lambda self: self.meta["max_frames"])
    num_shards = property(lambda self: self.meta["num_shards"])
    dtype = property(lambda self: np.dtype(self.meta["dtype"]))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, video_id: str) -> bool:
        """True when the id is in the store *and* its embeddings are written."""
        i = self._index.get(video_id)
        if i is None:
            return False
        arrays = self._arrays(i % self.num_shards)
        return arrays is not None and bool(arrays[2][i // self.num_shards])

    def shard_dir(self, shard_id: int) -> Path:
        return self.path / f"shard-{shard_id:05d}-of-{self.num_shards:05d}"

    def shard_rows(self, shard_id: int) -> np.ndarray:
        """Global rows of one shard, int64 [n_k] (local row j = global row shard_id + j * num_shards)."""
        return np.arange(shard_id, len(self.ids), self.num_shards, dtype=np.int64)

    # ---- reading -------------------------------------------------------------------------
    def _arrays(self, shard_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(embeddings, num_frames, done) memmaps of a shard, or None when it was never written."""
        if shard_id not in self._shards or self._shards[shard_id] is None:
            folder = self.shard_dir(shard_id)
            if not (folder / "done.npy").is_file():
                return None
            self._shards[shard_id] = tuple(
                np.load(folder / name, mmap_mode="r") for name in ("embeddings.npy", "num_frames.npy", "done.npy")
            )
        return self._shards[shard_id]

    def done_mask(self) -> np.ndarray:
        """bool [N]: rows whose embeddings are complete, merged over shards."""
        done = np.zeros(len(self.ids), dtype=bool)
        for shard_id in range(self.num_shards):
            arrays = self._arrays(shard_id)
            if arrays is not None:
                done[shard_id :: self.num_shards] = arrays[2]
        return done

    def missing_ids(self) -> list[str]:
        return [self.ids[i] for i in np.flatnonzero(~self.done_mask())]

    def get(self, video_id: str) -> tuple[np.ndarray, int]:
        """(embeddings [n, *frame_shape] in the store dtype, n) of one video."""
        i = self._index.get(video_id)
        if i is None:
            raise KeyError(f"video {video_id!r} is not in store {self.path}")
        arrays = self._arrays(i % self.num_shards)
        local = i // self.num_shards
        if arrays is None or not arrays[2][local]:
            raise KeyError(f"video {video_id!r} has no embeddings written in store {self.path} (extraction unfinished?)")
        n = int(arrays[1][local])
        return np.array(arrays[0][local, :n]), n

    def writer(self, shard_id: int = 0) -> ShardWriter:
        if not 0 <= shard_id < self.num_shards:
            raise ValueError(f"shard_id {shard_id} out of range for a store with {self.num_shards} shards")
        return ShardWriter(self, shard_id)

    def __getstate__(self) -> dict:  # DataLoader workers reopen the memmaps instead of pickling data
        state = self.__dict__.copy()
        state["_shards"] = {}
        return state


class ShardWriter:
    """Writes the rows of one shard into preallocated memmaps; rows already done are kept."""

    def __init__(self, store: EmbeddingStore, shard_id: int) -> None:
        self.store, self.shard_id = store, shard_id
        self.rows = store.shard_rows(shard_id)  # global rows, int64 [n_k]
        folder = store.shard_dir(shard_id)
        folder.mkdir(parents=True, exist_ok=True)
        shape = (len(self.rows), store.max_frames, *store.frame_shape)
        files = [folder / name for name in ("embeddings.npy", "num_frames.npy", "done.npy")]
        if files[2].is_file():  # resume: reopen what a previous run preallocated
            self.embeddings, self.num_frames, self.done = (open_memmap(f, mode="r+") for f in files)
            if self.embeddings.shape != shape:
                raise EmbeddingStoreError(f"{files[0]} has shape {self.embeddings.shape}, expected {shape}")
        else:  # done.npy is created last, so a crash during preallocation just starts over
            self.embeddings = open_memmap(files[0], mode="w+", dtype=store.dtype, shape=shape)
            self.num_frames = open_memmap(files[1], mode="w+", dtype=np.int32, shape=(len(self.rows),))
            self.done = open_memmap(files[2], mode="w+", dtype=bool, shape=(len(self.rows),))
        store._shards.pop(shard_id, None)

    def pending_rows(self) -> np.ndarray:
        """Global rows of this shard still to write, int64 [m]."""
        return self.rows[~np.asarray(self.done)]

    def write(self, rows: np.ndarray | list[int], embeddings: np.ndarray, num_frames: np.ndarray | list[int]) -> None:
        """Write global ``rows``; embeddings [B, F, *frame_shape] with F <= max_frames, num_frames [B]."""
        rows = np.asarray(rows, dtype=np.int64)
        if np.any(rows % self.store.num_shards != self.shard_id):
            raise ValueError(f"rows {rows[rows % self.store.num_shards != self.shard_id][:5].tolist()} are not in shard {self.shard_id}")
        embeddings = np.asarray(embeddings)
        if embeddings.shape[2:] != self.store.frame_shape or embeddings.shape[1] > self.store.max_frames:
            raise ValueError(f"embeddings of shape {embeddings.shape} do not fit frames <= {self.store.max_frames} x {self.store.frame_shape}")
        local = rows // self.store.num_shards
        f = embeddings.shape[1]
        self.embeddings[local, :f] = embeddings.astype(self.store.dtype)
        self.embeddings[local, f:] = 0
        self.num_frames[local] = np.asarray(num_frames, dtype=np.int32)
        self.embeddings.flush()
        self.num_frames.flush()
        self.done[local] = True  # only after the data is flushed
        self.done.flush()
