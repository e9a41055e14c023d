import pickle

import numpy as np
import pytest

from covr.data.embedding_store import EmbeddingStore
from covr.data.errors import EmbeddingStoreError

IDS = [f"page/v{i}" for i in range(7)]


def embeddings(rows, frames=5, shape=(3, 4)):
    """Distinct, exactly representable values per (row, frame)."""
    base = np.asarray(rows, dtype=np.float32)[:, None, None, None] * 16 + np.arange(frames)[None, :, None, None]
    return np.broadcast_to(base, (len(rows), frames, *shape)).copy()


def test_round_trip_with_variable_frame_counts(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", IDS, "model-a", (3, 4), max_frames=5, dtype="float32")
    writer = store.writer(0)
    writer.write([0, 1, 2], embeddings([0, 1, 2]), [5, 5, 5])
    writer.write([3], embeddings([3], frames=2), [2])
    reader = EmbeddingStore.open(tmp_path / "s", expected_identity="model-a")
    assert reader.frame_shape == (3, 4) and reader.max_frames == 5 and len(reader) == 7
    array, n = reader.get("page/v2")
    assert n == 5 and array.shape == (5, 3, 4)
    np.testing.assert_array_equal(array, embeddings([2])[0])
    array, n = reader.get("page/v3")
    assert n == 2 and array.shape == (2, 3, 4)
    assert "page/v3" in reader and "page/v4" not in reader and "nope" not in reader
    assert reader.missing_ids() == ["page/v4", "page/v5", "page/v6"]
    with pytest.raises(KeyError, match="no embeddings written"):
        reader.get("page/v4")
    with pytest.raises(KeyError, match="not in store"):
        reader.get("page/zz")


def test_two_shards_equal_one(tmp_path):
    rows = np.arange(len(IDS))
    single = EmbeddingStore.create(tmp_path / "one", IDS, "m", (3, 4), 5, "float16")
    single.writer(0).write(rows, embeddings(rows), [5] * len(rows))
    for shard_id in (1, 0):  # separate writers, any order
        sharded = EmbeddingStore.create(tmp_path / "two", IDS, "m", (3, 4), 5, "float16", num_shards=2)
        writer = sharded.writer(shard_id)
        assert writer.rows.tolist() == list(range(shard_id, len(IDS), 2))
        mine = writer.pending_rows()
        writer.write(mine, embeddings(mine), [5] * len(mine))
        with pytest.raises(ValueError, match="not in shard"):
            writer.write([1 - shard_id], embeddings([0]), [5])
    a, b = EmbeddingStore.open(tmp_path / "one"), EmbeddingStore.open(tmp_path / "two")
    assert b.done_mask().all()
    for video_id in IDS:
        np.testing.assert_array_equal(a.get(video_id)[0], b.get(video_id)[0])
    assert a.get("page/v3")[0].dtype == np.float16


def test_resume_skips_done_rows_and_keeps_their_data(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", IDS, "m", (3, 4), 5)
    first = store.writer(0)
    first.write([0, 1, 2], embeddings([0, 1, 2]), [5] * 3)  # then the job "dies"
    again = EmbeddingStore.create(tmp_path / "s", IDS, "m", (3, 4), 5).writer(0)
    pending = again.pending_rows()
    assert pending.tolist() == [3, 4, 5, 6]
    again.write(pending, embeddings(pending), [5] * len(pending))
    reader = EmbeddingStore.open(tmp_path / "s")
    assert reader.done_mask().all()
    np.testing.assert_array_equal(reader.get("page/v1")[0], embeddings([1])[0].astype(np.float16))


def test_stale_identity_and_mismatched_settings_are_refused(tmp_path):
    EmbeddingStore.create(tmp_path / "s", IDS, "model-a", (3, 4), 5)
    with pytest.raises(EmbeddingStoreError, match=r"written by model 'model-a', this run uses model 'model-b'; re-extract"):
        EmbeddingStore.open(tmp_path / "s", expected_identity="model-b")
    with pytest.raises(EmbeddingStoreError, match="model-a"):
        EmbeddingStore.create(tmp_path / "s", IDS, "model-b", (3, 4), 5)
    with pytest.raises(EmbeddingStoreError, match="num_shards=1, this writer uses 2"):
        EmbeddingStore.create(tmp_path / "s", IDS, "model-a", (3, 4), 5, num_shards=2)
    with pytest.raises(EmbeddingStoreError, match="ids_sha1"):
        EmbeddingStore.create(tmp_path / "s", IDS[::-1], "model-a", (3, 4), 5)
    with pytest.raises(EmbeddingStoreError, match="not an embedding store"):
        EmbeddingStore.open(tmp_path / "nothing")
    with pytest.raises(ValueError, match="unique"):
        EmbeddingStore.create(tmp_path / "d", ["a", "a"], "m", (4,), 5)


def test_pickles_without_array_data(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", IDS, "m", (4,), 3)
    store.writer(0).write([0], np.ones((1, 3, 4)), [3])
    reader = EmbeddingStore.open(tmp_path / "s")
    reader.get("page/v0")  # opens the memmaps
    clone = pickle.loads(pickle.dumps(reader))
    assert len(pickle.dumps(reader)) < 4096
    np.testing.assert_array_equal(clone.get("page/v0")[0], np.ones((3, 4)))
