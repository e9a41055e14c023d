"""Every protocol of every benchmark equals an independent transcription (tests/eval/transcriptions.py,
plain loops written from the guide) on random embeddings with exact ties, repeated ids and
self-matches, through the whole evaluator: official-layout annotations, up-front file checks, the
gallery from an embedding store (the route of imported CoVR embeddings), columns, top-K, metrics."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import transcriptions as T
from layouts_eval import make_circo, make_cirr, make_fashioniq, write_mp4
from torch import nn

from covr.data.embedding_store import EmbeddingStore
from covr.data.text import clean_text
from covr.eval import evaluate_benchmark

Q, E = 3, 8


def unit_tokens(rng, *shape):
    x = rng.standard_normal((*shape, Q, E)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class LookupRetriever(nn.Module):
    """Composed queries looked up by their (cleaned) text; the gallery comes from a store."""

    image_size, identity, target_identity = 8, "lookup", "lookup"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.table = {clean_text(k): torch.from_numpy(v) for k, v in table.items()}

    def encode_query(self, frames, edit_text, caption=None, frame_mask=None):
        return torch.stack([self.table[t] for t in edit_text])

    def encode_target_frames(self, frames, frame_mask=None):
        raise AssertionError("the gallery comes from the store")


def write_store(path, frames_of: dict[str, np.ndarray]) -> str:
    """frames_of: {id: [F, Q, E]} -> a float32 store stamped "lookup"."""
    ids = list(frames_of)
    store = EmbeddingStore.create(path, ids, "lookup", (Q, E), max(len(v) for v in frames_of.values()), "float32")
    writer = store.writer(0)
    for row, item in enumerate(ids):
        writer.write([row], frames_of[item][None], [len(frames_of[item])])
    return str(path)


def evaluate(retriever, cfg, tmp_path, store, **options):
    cfg = {**cfg, "target_store": store, "target_store_identity": "lookup"}
    return evaluate_benchmark(retriever, cfg, tmp_path / "out", batch_size=5, num_workers=0, device="cpu", **options)


def task_metrics(result):
    (task,) = result["tasks"].values()
    return task["metrics"]


def assert_same(found, expected):
    assert set(expected) <= set(found)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, abs=1e-9), key


# ---- WebVid-CoVR ---------------------------------------------------------------------------------


def webvid_fixture(tmp_path, seed=3):
    """30 rows over 14 videos: repeated targets and references, two self-matches (reference =
    target), two columns with identical frames and scores (an exact tie), a 3-frame video, score
    lists that match the frame count, do not, or are empty."""
    rng = np.random.default_rng(seed)
    videos = [f"{100 + i}/{5000 + i}" for i in range(14)]
    frames_of = {v: unit_tokens(rng, 4) for v in videos}
    frames_of[videos[5]] = frames_of[videos[2]].copy()  # identical frames under another id
    frames_of[videos[7]] = frames_of[videos[7]][:3]  # a shorter video
    for v in videos:
        write_mp4(tmp_path / "videos" / f"{v}.mp4", rng, frames=2)
    rows = []
    for i in range(30):
        target, reference = videos[rng.integers(14)], videos[rng.integers(14)]
        scores = [round(float(s), 3) for s in rng.uniform(0.2, 0.4, 4)]
        rows.append({"reference": reference, "target": target, "scores": scores})
    rows[3]["reference"] = rows[3]["target"]  # self-matches
    rows[11]["reference"] = rows[11]["target"]
    rows[4].update(target=videos[2], scores=[0.3, 0.25, 0.35, 0.3])
    rows[6].update(target=videos[5], scores=[0.3, 0.25, 0.35, 0.3])  # the same column as row 4: a tie
    rows[12].update(target=videos[7], scores=[0.31, 0.22, 0.3])  # 3 scores for 3 frames: softmax
    rows[13].update(target=videos[7])  # 4 scores for 3 frames: uniform
    rows[14]["scores"] = []  # no scores: uniform
    rows[15].update(target=rows[16]["target"], reference=rows[16]["reference"])  # a repeated (reference, target) pair
    with open(tmp_path / "test.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["pth1", "pth2", "edit", "txt1", "txt2", "scores"])
        writer.writeheader()
        for i, row in enumerate(rows):
            scores = "[" + ", ".join(str(s) for s in row["scores"]) + "]" if row["scores"] else ""
            writer.writerow({"pth1": row["reference"], "pth2": row["target"], "edit": f"Make it red {i}.", "txt1": "", "txt2": "", "scores": scores})
    queries = unit_tokens(rng, 30)
    queries[20] = queries[21]  # two identical queries
    table = {f"Make it red {i}.": queries[i] for i in range(30)}
    store = write_store(tmp_path / "store", {v: frames_of[v] for v in dict.fromkeys(r["target"] for r in rows)})
    cfg = {"reader": "webvid_covr", "annotation": str(tmp_path / "test.csv"), "video_root": str(tmp_path / "videos")}
    as_lists = {v: f.tolist() for v, f in frames_of.items()}
    return rows, as_lists, queries.tolist(), LookupRetriever(table), cfg, store


@pytest.mark.parametrize("protocol", ["covr2", "covr"])
def test_webvid_covr_protocols_equal_the_transcription(tmp_path, protocol):
    rows, frames_of, queries, retriever, cfg, store = webvid_fixture(tmp_path)
    reference = (T.webvid_covr2 if protocol == "covr2" else T.webvid_covr)(rows, frames_of, queries)
    result = evaluate(retriever, {**cfg, "protocol": protocol}, tmp_path, store)
    assert result["protocol"]["name"] == protocol and result["counts"]["queries"] == 30
    assert_same(task_metrics(result), reference)
    assert reference["R@1"] not in (0.0, 100.0)


def test_webvid_fixture_has_ties_self_matches_and_no_near_ties(tmp_path):
    """What the protocol test relies on: exact ties exist, and distinct scores are far apart
    compared with float32 rounding, so any difference in ranking is a difference in definition."""
    rows, frames_of, queries, *_ = webvid_fixture(tmp_path)
    columns = []
    for row in rows:
        frames = frames_of[row["target"]]
        s = row["scores"]
        w = T.softmax_weights(s) if s and len(s) == len(frames) else [1 / len(frames)] * len(frames)
        columns.append(T.token_mean([T.normalised(t) for t in T.pool(frames, w)]))
    assert min(T.min_gap([T.dot(T.token_mean(q), c) for c in columns]) for q in queries) > 1e-5  # within each ranking
    assert columns[4] == columns[6] and sum(r["reference"] == r["target"] for r in rows) >= 2
    assert T.webvid_covr2(rows, frames_of, queries) != T.webvid_covr(rows, frames_of, queries)  # the protocols differ here


# ---- CIRR, FashionIQ, CIRCO ---------------------------------------------------------------------


def image_store(tmp_path, ids, rng, copies=((1, 3), (4, 9))):
    tokens = {i: unit_tokens(rng, 1) for i in ids}
    for source, copy in copies:  # identical images under other ids: exact ties
        tokens[ids[copy]] = tokens[ids[source]].copy()
    return write_store(tmp_path / "store", tokens), {i: t[0].tolist() for i, t in tokens.items()}


@pytest.mark.parametrize("protocol", ["covr2", "covr"])
def test_cirr_protocols_equal_the_transcription(tmp_path, protocol):
    fixture = make_cirr(tmp_path / "CIRR", "val", n_images=14, n_queries=12, seed=1)
    rng = np.random.default_rng(5)
    ids = [i for i, _ in fixture["gallery"]]
    store, tokens_of = image_store(tmp_path, ids, rng)
    queries = unit_tokens(rng, len(fixture["queries"]))
    retriever = LookupRetriever({q["text"]: queries[n] for n, q in enumerate(fixture["queries"])})
    cfg = {"reader": "cirr", "root": str(tmp_path / "CIRR"), "protocol": protocol}
    result = evaluate(retriever, cfg, tmp_path, store, save_rankings=True)
    similarity, mask = ("max_token_pair", -100.0) if protocol == "covr2" else ("mean", None)
    reference = T.cirr(fixture["queries"], ids, tokens_of, queries.tolist(), similarity, mask)
    assert_same(task_metrics(result), reference)
    # whole rankings too: the masked reference ranks last (covr2) or not at all (covr)
    lines = [json.loads(line) for line in (tmp_path / "out" / "cirr" / "val" / "rankings.jsonl").read_text().splitlines()]
    for n, (q, line) in enumerate(zip(fixture["queries"], lines)):
        assert line["ids"] == T.ranked_ids(queries.tolist()[n], q["reference"], ids, tokens_of, similarity, mask)
    assert result["protocol"]["similarity"] == similarity
    assert min(T.min_gap(T.image_scores(q, ids, tokens_of, similarity)) for q in queries.tolist()) > 1e-5


def query_table(texts, rng):
    """One random query per distinct text (a repeated query gets the same tokens) -> (table, [N, Q, E])."""
    table: dict[str, np.ndarray] = {}
    for text in texts:
        table.setdefault(text, unit_tokens(rng, 1)[0])
    return table, np.stack([table[t] for t in texts])


@pytest.mark.parametrize("protocol,reference_in_gallery", [("covr2", False), ("covr", False), ("covr2", True)])
def test_fashioniq_protocols_equal_the_transcription(tmp_path, protocol, reference_in_gallery):
    make_fashioniq(tmp_path / "fiq", categories=("dress",), n_images=16, n_queries=10, seed=2)
    captions = tmp_path / "fiq" / "captions" / "cap.dress.val.json"
    entries = json.loads(captions.read_text())
    entries.append({"candidate": entries[0]["target"], "target": entries[0]["target"], "captions": ["Is RED!", "has (no) sleeves"]})
    entries.append(dict(entries[1]))  # a repeated query
    captions.write_text(json.dumps(entries))
    ids = json.loads((tmp_path / "fiq" / "image_splits" / "split.dress.val.json").read_text())
    rng = np.random.default_rng(7)
    store, tokens_of = image_store(tmp_path, ids, rng)
    table, queries = query_table([f"{e['captions'][0]} and {e['captions'][1]}" for e in entries], rng)
    retriever = LookupRetriever(table)
    cfg = {"reader": "fashioniq", "root": str(tmp_path / "fiq"), "categories": ["dress"], "protocol": protocol,
           "reference_in_gallery": reference_in_gallery}  # fmt: skip
    result = evaluate(retriever, cfg, tmp_path, store)
    rows = [{"reference": e["candidate"], "target": e["target"], "keep_reference": reference_in_gallery} for e in entries]
    reference = T.single_target(rows, ids, tokens_of, queries.tolist(), -10.0 if protocol == "covr2" else None)
    assert_same(task_metrics(result), reference)
    assert result["options"]["reference_in_gallery"] is reference_in_gallery


@pytest.mark.parametrize("protocol", ["covr2", "covr"])
def test_circo_protocols_equal_the_transcription(tmp_path, protocol):
    make_circo(tmp_path / "CIRCO", "val", n_images=24, n_queries=9, seed=4)
    annotation = tmp_path / "CIRCO" / "annotations" / "val.json"
    entries = json.loads(annotation.read_text())
    first = entries[0]
    entries.append({**first, "id": 100, "gt_img_ids": [first["reference_img_id"]] + first["gt_img_ids"]})  # reference among the gts
    entries.append({**entries[2], "id": 101})  # a repeated query
    annotation.write_text(json.dumps(entries))
    info = json.loads((tmp_path / "CIRCO" / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json").read_text())
    ids = [str(i["id"]) for i in info["images"]]
    rng = np.random.default_rng(9)
    store, tokens_of = image_store(tmp_path, ids, rng)
    table, queries = query_table([e["relative_caption"] for e in entries], rng)
    retriever = LookupRetriever(table)
    result = evaluate(retriever, {"reader": "circo", "root": str(tmp_path / "CIRCO"), "protocol": protocol}, tmp_path, store)
    rows = [{"reference": str(e["reference_img_id"]), "target": str(e["target_img_id"]), "gts": {str(g) for g in e["gt_img_ids"]}} for e in entries]
    reference = T.single_target(rows, ids, tokens_of, queries.tolist(), -100.0 if protocol == "covr2" else None)
    assert_same(task_metrics(result), reference)
