import csv
from collections import defaultdict

import numpy as np
import pytest
from helpers_data import toy_data  # noqa: F401 (fixture)

from covr.data import video
from covr.data.annotations import parse_scores
from covr.data.text import clean_text
from covr.data.toy import COLUMNS, generate_toy_dataset, toy_vocabulary
from covr.data.toy_render import COLOURS, SIZES


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def small(out, seed):
    return generate_toy_dataset(out, seed=seed, num_train=120, num_val=8, num_test=12, train_instances=1, num_frames=6, image_size=32)


def test_same_seed_same_dataset(tmp_path):
    a, b, c = small(tmp_path / "a", 5), small(tmp_path / "b", 5), small(tmp_path / "c", 6)
    for split in ("train", "val", "test"):
        assert a[split].read_bytes() == b[split].read_bytes()
        assert a[split].read_bytes() != c[split].read_bytes()
    first = read(a["test"])[0]["pth2"]
    assert (a["video_root"] / f"{first}.mp4").read_bytes() == (b["video_root"] / f"{first}.mp4").read_bytes()


def test_default_sizes_and_layout(tmp_path):
    paths = generate_toy_dataset(tmp_path)
    sizes = {split: len(read(paths[split])) for split in ("train", "val", "test")}
    assert sizes == {"train": 3000, "val": 60, "test": 150}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy-covr_test.csv", "toy-covr_train.csv", "toy-covr_val.csv", "videos"]


def test_columns_files_and_scores(toy_data):
    for split in ("train", "val", "test"):
        with open(toy_data[split]) as handle:
            assert tuple(next(csv.reader(handle))) == COLUMNS
        for row in read(toy_data[split]):
            for field in ("pth1", "pth2"):
                page_dir, video_id = row[field].split("/")
                assert video_id.isdigit() and (toy_data["video_root"] / page_dir / f"{video_id}.mp4").is_file()
            assert len(parse_scores(row["scores"])) == 15
            assert 0 <= float(row["sim_txt"]) <= 1 and float(row["person-prob"]) == 0.0


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_videos_decode_and_show_the_captioned_colour(toy_data, backend):
    if backend == "decord" and video.decord is None:
        pytest.skip("decord not installed")
    for row in read(toy_data["test"])[:10]:
        frames = video.decode_video(toy_data["video_root"] / f"{row['pth2']}.mp4", 8, "uniform", backend=backend)
        assert frames.shape == (8, 32, 32, 3)
        size, colour = row["txt2"].split()[1:3]
        assert size in SIZES and colour in COLOURS
        middle = frames[4].reshape(-1, 3).astype(int)  # the shape's pixels are the ones nearest its colour
        distance = np.abs(middle - np.array(COLOURS[colour])).sum(axis=1)
        assert (distance < 60).sum() >= 0.5 * (SIZES[size] * 32) ** 2


def test_vocabulary_tokenizes_every_text_without_unk(toy_data):
    from transformers import BertTokenizer

    vocabulary = toy_vocabulary()
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(set(vocabulary)) == len(vocabulary)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocabulary)})
    texts = {clean_text(row[f]) for split in ("train", "val", "test") for row in read(toy_data[split]) for f in ("edit", "txt1", "txt2")}
    assert len(texts) > 50
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text


def test_test_split_has_unique_distinct_targets_and_reused_references(toy_data):
    rows = read(toy_data["test"])
    assert len({r["pth2"] for r in rows}) == len(rows)  # one query per target
    assert len({r["txt2"] for r in rows}) == len(rows)  # distinct scenes: a perfect model can reach R@1 = 100
    per_reference = defaultdict(set)
    for r in rows:
        per_reference[r["pth1"]].add(r["pth2"])
    assert all(len(targets) >= 2 for targets in per_reference.values())
    assert not {r["pth1"] for r in rows} & {r["pth2"] for r in read(toy_data["train"])}  # own videos


def test_the_task_needs_both_inputs(toy_data):
    """Scenes are identified by their captions; train teaches (reference scene, edit) -> target scene."""
    train, test = read(toy_data["train"]), read(toy_data["test"])
    by_reference, by_edit, composed = defaultdict(set), defaultdict(set), defaultdict(set)
    for r in train + test:
        by_reference[r["txt1"]].add(r["txt2"])
        by_edit[r["edit"]].add(r["txt2"])
        composed[(r["txt1"], r["edit"])].add(r["txt2"])
    assert all(len(targets) == 1 for targets in composed.values())  # both inputs: the answer is determined
    train_references, train_videos = defaultdict(set), defaultdict(set)
    for r in train:
        train_references[r["txt1"]].add(r["txt2"])
        train_videos[r["pth1"]].add(r["pth2"])
    assert all(len(targets) >= 2 for targets in train_videos.values())  # every train video gets several edits
    for r in test:
        assert len(by_reference[r["txt1"]]) >= 2, "the reference video alone would identify the target"
        assert len(train_references[r["txt1"]]) != 1, "train pairs this reference scene with one target only"
        assert len(by_edit[r["edit"]]) >= 2, "the edit text alone would identify the target"
    edit_references = defaultdict(set)
    for r in train:
        edit_references[r["edit"]].add(r["pth1"])
    assert np.median([len(v) for v in edit_references.values()]) >= 5  # edits recur over many videos
