"""EgoCVR, TF-CoVR and Dense-WebVid-CoVR through the whole evaluator (official-layout files, text
rules, file checks, the gallery from an embedding store, columns, per-query galleries, top-K,
metrics) equal independent plain-loop transcriptions (transcriptions_video.py) on random
embeddings with exact ties, repeated gallery rows, multi-target and self-target queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transcriptions as T
import transcriptions_video as TV
from layouts_video import make_dense_webvid_covr, make_egocvr, make_tf_covr
from torch import nn

from covr.data.embedding_store import EmbeddingStore
from covr.eval import evaluate_benchmark

Q, E = 3, 8


def unit(rng, *shape):
    x = rng.standard_normal((*shape, Q, E)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class TextLookup(nn.Module):
    """Composed queries looked up by the exact text the evaluator passes (a wrong text rule fails)."""

    image_size, identity, target_identity = 8, "lookup", "lookup"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.table = {k: torch.from_numpy(v) for k, v in table.items()}

    def encode_query(self, frames, edit_text, caption=None, frame_mask=None):
        return torch.stack([self.table[t] for t in edit_text])


class CaptionRecorder(TextLookup):
    """TextLookup that also records the captions it is given."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        super().__init__(table)
        self.captions: list[str] = []

    def encode_query(self, frames, edit_text, caption=None, frame_mask=None):
        self.captions += list(caption or [])
        return super().encode_query(frames, edit_text, caption, frame_mask)


def store(path, frames_of: dict[str, np.ndarray]) -> str:
    ids = list(frames_of)
    created = EmbeddingStore.create(path, ids, "lookup", (Q, E), max(len(v) for v in frames_of.values()), "float32")
    writer = created.writer(0)
    for row, item in enumerate(ids):
        writer.write([row], frames_of[item][None], [len(frames_of[item])])
    return str(path)


def run(retriever, cfg, tmp_path, frames_of):
    cfg = {**cfg, "target_store": store(tmp_path / "store", frames_of), "target_store_identity": "lookup"}
    result = evaluate_benchmark(retriever, cfg, tmp_path / "out", batch_size=4, num_workers=0, device="cpu")
    (task,) = result["tasks"].values()
    return result, task


def assert_same(found, expected):
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, abs=1e-9), key


def ego_embeddings(fixture, rng, absent=()):
    """Per-clip frames; two distinct clips share identical frames (an exact tie); `absent` clips
    have no embedding (unreadable)."""
    clips = list(fixture["uid"])
    frames_of = {c: unit(rng, 2 + n % 3) for n, c in enumerate(clips)}
    frames_of[clips[3]] = frames_of[clips[1]].copy()
    return {c: f for c, f in frames_of.items() if c not in absent}


@pytest.mark.parametrize("setting", ["global", "local"])
@pytest.mark.parametrize("protocol,exclude", [("egocvr", False), ("unique", False), ("egocvr", True)])
def test_egocvr_equals_the_transcription(tmp_path, setting, protocol, exclude):
    fixture = make_egocvr(tmp_path / "EgoCVR")
    rng = np.random.default_rng(11)
    absent = (fixture["data"][13],)  # a distractor without an embedding: skipped, counted
    frames_of = ego_embeddings(fixture, rng, absent)
    tokens = unit(rng, len(fixture["queries"]))
    for n in (0, 1, 3):  # queries near a target: hits at R@1, the self-target's own clip, a repeated row
        tokens[n] = frames_of[fixture["queries"][n]["targets"][0]][0]
    texts = [TV.pre_caption(q["text"]) for q in fixture["queries"]]
    cfg = {"reader": "egocvr", "root": str(tmp_path / "EgoCVR"), "setting": setting, "protocol": protocol, "exclude_query_clip": exclude}
    result, task = run(TextLookup(dict(zip(texts, tokens))), cfg, tmp_path, frames_of)
    expected, unscored = TV.egocvr(fixture["queries"], fixture["data"], {c: f.tolist() for c, f in frames_of.items()},
                                   tokens.tolist(), setting, unique=protocol == "unique", exclude_query=exclude)  # fmt: skip
    assert_same(task["metrics"], expected)
    assert task["counts"]["queries_unscored"] == unscored and task["counts"]["queries"] == len(texts) - unscored
    assert task["counts"]["gallery_skipped"] == 1 and result["options"]["setting"] == setting
    assert 0 < expected["R@1"] < 100 and (setting == "global" or unscored == 1)


def test_egocvr_text_choice_and_narration_caption(tmp_path):
    fixture = make_egocvr(tmp_path / "EgoCVR")
    rng = np.random.default_rng(2)
    tokens = unit(rng, len(fixture["queries"]))
    texts = [TV.pre_caption(q["instruction"]) for q in fixture["queries"]]
    retriever = CaptionRecorder(dict(zip(texts, tokens)))
    cfg = {"reader": "egocvr", "root": str(tmp_path / "EgoCVR"), "text": "instruction", "caption": "narration"}
    result, task = run(retriever, cfg, tmp_path, ego_embeddings(fixture, rng))
    assert retriever.captions == [TV.pre_caption(TV.ego_narration(f"#C C holds tool {n}")) for n in range(len(texts))]
    assert result["options"]["text"] == "instruction" and result["options"]["caption"] == "narration"


def tf_embeddings(fixture, rng):
    frames_of = {v: unit(rng, 2 + n % 2) for n, v in enumerate(fixture["videos"])}
    frames_of[fixture["videos"][7]] = frames_of[fixture["videos"][5]].copy()  # two videos tie exactly
    return frames_of


@pytest.mark.parametrize("protocol", ["tf_covr", "unique"])
def test_tf_covr_equals_the_transcription(tmp_path, protocol):
    fixture = make_tf_covr(tmp_path / "TF-CoVR")
    rng = np.random.default_rng(4)
    frames_of = tf_embeddings(fixture, rng)
    tokens = unit(rng, len(fixture["queries"]))
    texts = [TV.tf_covr_text(q["text"]) for q in fixture["queries"]]
    assert texts[0].startswith("do two and a half turns instead of one.") and "10 times" in texts[2]
    result, task = run(TextLookup(dict(zip(texts, tokens))), {"reader": "tf_covr", "root": str(tmp_path / "TF-CoVR"), "protocol": protocol},
                       tmp_path, frames_of)  # fmt: skip
    expected = TV.tf_covr(fixture["queries"], {v: f.tolist() for v, f in frames_of.items()}, tokens.tolist(), unique=protocol == "unique")
    assert_same(task["metrics"], expected)
    assert result["metrics"]["mAP@50"] == task["metrics"]["mAP@50"]
    repeats = len(fixture["queries"]) != len(set(q["target"] for q in fixture["queries"]))
    assert repeats and task["counts"]["gallery_entries"] == (10 if protocol == "tf_covr" else 8)
    if protocol == "tf_covr":  # the duplicated gallery counts a target shown twice twice
        assert expected["R@50"] > 100.0


def test_dense_webvid_covr_word_limit_is_an_option_and_reported(tmp_path):
    fixture = make_dense_webvid_covr(tmp_path / "dense")
    rng = np.random.default_rng(6)
    frames_of = {v: unit(rng, 4) for v in fixture["videos"]}
    tokens = unit(rng, len(fixture["queries"]))
    rows = [{"reference": q["reference"], "target": q["target"], "scores": q["scores"]} for q in fixture["queries"]]
    expected = T.webvid_covr2(rows, {v: f.tolist() for v, f in frames_of.items()}, tokens.tolist())
    cfg = {"reader": "webvid_covr", "name": "dense_webvid_covr", "annotation": str(fixture["csv"]),
           "video_root": str(tmp_path / "dense/WebVid/8M/train")}  # fmt: skip
    for words in (30, 60):
        texts = [TV.pre_caption(q["edit"], words) for q in fixture["queries"]]
        result, task = run(TextLookup(dict(zip(texts, tokens))), {**cfg, "max_words": words}, tmp_path / str(words), frames_of)
        long = sum(len(q["edit"].split()) > words for q in fixture["queries"])
        assert task["counts"]["texts_cut"] == long and result["options"]["max_words"] == words
        assert_same(task["metrics"], expected)
    assert long == 0 and list(result["tasks"]) == ["dense_webvid_covr/test"]
