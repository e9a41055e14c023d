import csv
import logging

import numpy as np
import pytest
import torch
from helpers_data import broken_videos, triplet, write_csv  # noqa: F401 (fixture)
from torch.utils.data import DataLoader

from covr.data.collate import EpochSampler, collate_covr, pad_frames
from covr.data.embedding_store import EmbeddingStore
from covr.data.errors import MissingVideosError, VideoDecodeError
from covr.data.webvid_covr import WebVidCoVRDataset
from covr.data.transforms import TrainTransform

SCORES = [0.3, 0.1, 0.5, 0.2, 0.4, 0.0, 0.3, 0.6, 0.1, 0.2, 0.3, 0.25, 0.35, 0.05, 0.15]


def as_text(values):
    return "[" + ", ".join(str(v) for v in values) + "]"


@pytest.fixture
def broken_csv(tmp_path, broken_videos):
    rows = [
        triplet("page/g0", "page/g1"),  # 0 fine, no scores
        triplet("page/g1", "page/g2", scores=as_text(SCORES)),  # 1 fine, 15 scores
        triplet("page/missing", "page/g3"),  # 2 reference missing
        triplet("page/g2", "page/empty"),  # 3 target is a 0-byte file
        triplet("page/g3", "page/truncated"),  # 4 target truncated: passes the cheap check, fails to decode
        triplet("page/text", "page/g4"),  # 5 reference is a text file named .mp4
        triplet("page/g4", "page/g5"),  # 6 fine
        triplet("page/g5", "page/g0", scores="[]"),  # 7 fine, empty score list (uniform weights)
    ]
    return write_csv(tmp_path / "covr.csv", rows)


def dataset(csv_path, root, split="train", **kw):
    kw.setdefault("image_size", 32)
    kw.setdefault("epoch_mode", "all_triplets")
    return WebVidCoVRDataset(csv_path, root, split, **kw)


def read_report(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_train_skips_missing_and_empty_up_front_and_reports(broken_csv, broken_videos, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        ds = dataset(broken_csv, broken_videos["root"], report_dir=tmp_path / "run")
    assert ds.rows.tolist() == [0, 1, 4, 5, 6, 7] and len(ds) == 6
    report = tmp_path / "run" / "skipped_train.csv"
    assert [(r["row"], r["id"], r["field"], r["reason"]) for r in read_report(report)] == [
        ("2", "page/missing", "pth1", "missing"),
        ("3", "page/empty", "pth2", "empty"),
    ]
    assert f"skipped 2 of 8 train rows: 1 empty, 1 missing; list in {report}" in caplog.text


def test_decode_failures_are_replaced_deterministically_and_reported_once(broken_csv, broken_videos, tmp_path, capfd):
    """Rows 4 and 5 (positions 2 and 3) do not decode: another row of the same epoch stands in, the
    same one in any process (a second dataset plays another worker), and a new one next epoch; each
    bad row is listed once however often it is met; decord's own stderr line is not printed."""
    ds = dataset(broken_csv, broken_videos["root"], report_dir=tmp_path)
    other_worker = dataset(broken_csv, broken_videos["root"], report_dir=tmp_path)
    rows = ds.rows.tolist()
    for epoch in (0, 1, 0):
        ds.set_epoch(epoch)
        other_worker.set_epoch(epoch)
        items = ds.__getitems__(list(range(len(ds))))
        served = [item["index"] for item in items]
        assert served[:2] == [0, 1] and served[4:] == [6, 7] and all(r in (0, 1, 6, 7) for r in served[2:4])
        assert [other_worker[i]["index"] for i in range(len(ds))] == served
        for position in (2, 3):  # the documented draw: position k of attempt a from rng(seed, epoch, k, 3, a)
            row, attempt = rows[position], 0
            while row in (4, 5):
                row = rows[int(np.random.default_rng([ds.seed, epoch, position, 3, attempt]).integers(len(ds)))]
                attempt += 1
            assert served[position] == row
    reported = read_report(tmp_path / "skipped_train.csv")
    assert [(r["row"], r["id"], r["reason"]) for r in reported[2:]] == [("4", "page/truncated", "unreadable"), ("5", "page/text", "unreadable")]
    assert "ERROR opening" not in capfd.readouterr().err
    assert collate_covr([None, None]) is None


def test_item_contents(broken_csv, broken_videos):
    ds = dataset(broken_csv, broken_videos["root"], num_target_frames=15)
    item = ds[1]  # row 1
    assert item["reference_frames"].shape == (1, 3, 32, 32) and item["reference_frames"].dtype == torch.float32
    assert item["target_frames"].shape == (15, 3, 32, 32)
    assert (item["edit"], item["reference_caption"], item["target_caption"]) == ("make it red", "caption of page/g1", "caption of page/g2")
    assert (item["reference_id"], item["target_id"], item["index"]) == ("page/g1", "page/g2", 1)


def test_score_weights_softmax_and_uniform_fallbacks(broken_csv, broken_videos):
    ds = dataset(broken_csv, broken_videos["root"], num_target_frames=15)
    expected = torch.softmax(torch.tensor(SCORES) / 0.1, dim=0)
    torch.testing.assert_close(ds[1]["target_weights"], expected)
    torch.testing.assert_close(ds[0]["target_weights"], torch.full((15,), 1 / 15))  # no scores
    torch.testing.assert_close(ds[5]["target_weights"], torch.full((15,), 1 / 15))  # empty score list
    short = dataset(broken_csv, broken_videos["root"], num_target_frames=10)
    torch.testing.assert_close(short[1]["target_weights"], torch.full((10,), 0.1))  # length mismatch


def test_test_split_refuses_missing_videos_naming_them(broken_csv, broken_videos):
    with pytest.raises(MissingVideosError) as info:
        dataset(broken_csv, broken_videos["root"], split="test")
    message = str(info.value)
    assert "covr.csv" in message and "of 8 test rows" in message and "allow_missing" in message
    # every test file is opened up front: the truncated and the text "video" fail here, before any decoding
    assert all(name in message for name in ("page/missing", "page/empty", "page/truncated", "page/text"))


def test_test_split_allow_missing_drops_and_reports(broken_csv, broken_videos, tmp_path):
    ds = dataset(broken_csv, broken_videos["root"], split="test", allow_missing=True, report_dir=tmp_path)
    assert ds.epoch_mode == "all_triplets" and {0, 1, 6} <= set(ds.rows.tolist()) and not {2, 3, 4, 5} & set(ds.rows.tolist())
    assert {2, 3, 4, 5} <= {int(row["row"]) for row in read_report(tmp_path / "skipped_test.csv")}  # truncated / text: opened up front
    strict = dataset(broken_csv, broken_videos["root"], split="test", check_files=False)
    with pytest.raises(VideoDecodeError, match="test row 4"):
        strict[4]


@pytest.fixture
def grouped_csv(tmp_path, broken_videos):
    """Target g1 has three triplets (rows 0, 2, 3), target g2 one (row 1)."""
    rows = [triplet("page/g0", "page/g1", "e0"), triplet("page/g0", "page/g2", "e1"),
            triplet("page/g3", "page/g1", "e2"), triplet("page/g4", "page/g1", "e3")]  # fmt: skip
    return write_csv(tmp_path / "grouped.csv", rows)


def test_unique_target_epochs_redraw_one_triplet_per_target(grouped_csv, broken_videos):
    ds = dataset(grouped_csv, broken_videos["root"], epoch_mode="unique_targets", seed=1)
    assert len(ds) == 2
    drawn = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        rows = [ds.row_of(i) for i in range(len(ds))]
        assert rows == [ds.row_of(i) for i in range(len(ds))]  # fixed within an epoch
        assert rows[1] == 1 and rows[0] in (0, 2, 3)
        drawn.append(rows[0])
    assert set(drawn) == {0, 2, 3}
    assert ds.target_ids() == ["page/g1", "page/g2"]
    every = dataset(grouped_csv, broken_videos["root"], epoch_mode="all_triplets")
    assert len(every) == 4 and [every.row_of(i) for i in range(4)] == [0, 1, 2, 3]


def test_epoch_sampler_reaches_persistent_workers(grouped_csv, broken_videos):
    ds = dataset(grouped_csv, broken_videos["root"], epoch_mode="unique_targets", seed=1)
    sampler = EpochSampler(ds, shuffle=False)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=1, persistent_workers=True, collate_fn=collate_covr)
    seen = []
    for epoch in range(8):
        sampler.set_epoch(epoch)
        seen.append(next(iter(loader))["index"].tolist())
        assert seen[-1] == [ds.row_of(0), ds.row_of(1)]  # the worker used this epoch's draw
    assert len({rows[0] for rows in seen}) > 1


def test_pad_frames_pads_with_zeros_and_masks():
    a, b = torch.ones(2, 3), torch.full((4, 3), 2.0)
    out, mask = pad_frames([a, b])
    assert out.shape == (2, 4, 3) and mask.tolist() == [[True, True, False, False], [True] * 4]
    assert out[0, 2:].abs().sum() == 0 and torch.equal(out[1], b)


def test_store_targets(tmp_path, broken_videos):
    ids = ["page/g1", "page/g2", "page/g3"]
    store = EmbeddingStore.create(tmp_path / "store", ids, "model-a", (2, 4), max_frames=15)
    frames = np.broadcast_to(np.arange(15, dtype=np.float32)[None, :, None, None], (2, 15, 2, 4))
    store.writer(0).write([0, 1], frames, [15, 15])  # g3 left unwritten
    rows = [triplet("page/g0", "page/g1", scores=as_text(SCORES)), triplet("page/g0", "page/g2"),
            triplet("page/g4", "page/g3"), triplet("page/g4", "page/g5")]  # fmt: skip
    csv_path = write_csv(tmp_path / "s.csv", rows)
    ds = dataset(csv_path, broken_videos["root"], target_source="store", store=tmp_path / "store", store_identity="model-a",
                 num_target_frames=4, report_dir=tmp_path)  # fmt: skip
    assert ds.rows.tolist() == [0, 1]
    assert [(r["id"], r["reason"]) for r in read_report(tmp_path / "skipped_train.csv")] == [("page/g3", "no embedding"), ("page/g5", "no embedding")]
    item = ds[0]
    embedding = item["target_embedding"]
    assert embedding.shape == (4, 2, 4) and embedding.dtype == torch.float16 and "target_frames" not in item
    chosen = embedding[:, 0, 0].long()
    assert chosen.tolist() == sorted(set(chosen.tolist()))  # distinct frames, in order
    torch.testing.assert_close(item["target_weights"], torch.softmax(torch.tensor(SCORES)[chosen] / 0.1, 0))
    batch = collate_covr([ds[0], ds[1]])
    assert batch["target_embedding"].shape == (2, 4, 2, 4) and batch["target_frame_mask"].all()
    with pytest.raises(Exception, match="model-a.*model-b"):
        dataset(csv_path, broken_videos["root"], target_source="store", store=tmp_path / "store", store_identity="model-b")


@pytest.mark.parametrize("mode", ["frames", "store"])
def test_batch_fetch_equals_items_one_by_one(broken_csv, broken_videos, tmp_path, mode):
    """__getitems__ (what a DataLoader calls) gives the items ds[i] gives, skipped rows included."""
    kw = {}
    if mode == "store":
        ids = [f"page/g{i}" for i in range(6)] + ["page/truncated"]
        store = EmbeddingStore.create(tmp_path / "store", ids, "m", (3,), max_frames=15)
        store.writer(0).write(list(range(7)), np.random.default_rng(0).normal(size=(7, 15, 3)).astype(np.float32), [15] * 7)
        kw = {"target_source": "store", "store": tmp_path / "store", "store_identity": "m", "num_target_frames": 4}
    ds = dataset(broken_csv, broken_videos["root"], transform=TrainTransform(32, horizontal_flip=True), **kw)
    order = [4, 0, 3, 1, 5, 2]
    together = ds.__getitems__(order)
    alone = [ds[i] for i in order]
    assert None not in together and None not in alone
    assert [item["index"] for item in alone][order.index(3)] != 5  # row 5 is not a video: replaced
    for a, b in zip(together, alone):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
