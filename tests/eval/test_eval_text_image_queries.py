"""Text-to-image and image-to-image retrieval sets through the generic JSONL reader and the one
evaluator: the documented example file reads, and with a tiny real retriever a text query ranks by
the text encoder, an image query by the target encoder, a composed one as always (each equal to a
one-pair-at-a-time computation)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers_eval import ColourRetriever, load_tensor, write_image

from conftest import REPO, tiny_model_config
from covr.eval import evaluate_benchmark
from covr.eval.datasets import load_benchmark
from covr.models import build_retriever

EXAMPLE = REPO / "docs" / "examples"


def _copy_example(root):
    root.mkdir(parents=True)
    for name in ("retrieval.jsonl", "gallery.txt"):
        shutil.copy(EXAMPLE / name, root / name)
    rng = np.random.default_rng(0)
    for item in (root / "gallery.txt").read_text().split():
        write_image(root / "images" / f"{item}.jpg", rng)
    return {"reader": "cir_jsonl", "annotation": str(root / "retrieval.jsonl"), "image_root": str(root / "images"),
            "gallery_file": str(root / "gallery.txt"), "image_extension": ".jpg", "recall_of": "any", "category_fields": ["category"]}  # fmt: skip


def test_the_documented_example_reads_as_text_image_and_composed_queries(tmp_path):
    cfg = _copy_example(tmp_path / "set")
    queries = load_benchmark("cir_jsonl", {k: v for k, v in cfg.items() if k != "reader"}).tasks[0].queries
    assert [q.modality for q in queries] == ["text", "text", "image", "image", "composed"]
    text, image = queries[0], queries[2]
    assert (text.reference, text.reference_path, text.exclude) == ("", None, ())
    assert image.text == "" and image.exclude == ("ground_0001",) and image.reference_path.name == "ground_0001.jpg"
    assert queries[1].correct() == ("ground_0003", "ground_0004")


@pytest.mark.parametrize("mode", ["mean", "max_token_pair"])
def test_text_and_image_queries_rank_by_their_own_encoders(tmp_path, mode):
    torch.manual_seed(0)
    model = build_retriever(tiny_model_config()).eval()
    cfg = _copy_example(tmp_path / "set")
    result = evaluate_benchmark(model, cfg, tmp_path / "out", batch_size=2, num_workers=0, save_rankings=True, similarity=mode)
    lines = [json.loads(x) for x in (tmp_path / "set" / "retrieval.jsonl").read_text().splitlines()]
    gallery = (tmp_path / "set" / "gallery.txt").read_text().split()
    path = lambda item: tmp_path / "set" / "images" / f"{item}.jpg"  # noqa: E731
    rows = [json.loads(x) for x in (tmp_path / "out" / "cir_jsonl" / "test" / "rankings.jsonl").read_text().splitlines()]
    with torch.no_grad():
        targets = {i: model.encode_target(load_tensor(path(i), model.image_size))[0] for i in gallery}  # [Q, E]
        for line, row in zip(lines, rows):
            if "reference" not in line:
                query = model.encode_text([line["text"]])  # [1, E]: one token
            elif "text" not in line:
                query = targets[line["reference"]]
            else:
                query = model.encode_query(load_tensor(path(line["reference"]), model.image_size), [line["text"]])[0]
            scores = {i: float(query.mean(0) @ t.mean(0)) if mode == "mean" else max(float(a @ b) for a in query for b in t)
                      for i, t in targets.items() if i != line.get("reference")}  # fmt: skip
            assert row["ids"] == sorted(scores, key=lambda i: (-scores[i], gallery.index(i)))
            assert row["scores"] == pytest.approx([scores[i] for i in row["ids"]], abs=1e-5)
    assert set(result["by_category"]["category"]) == {"text-to-aerial", "text-to-ground", "ground-to-aerial", "aerial-to-ground", "composed"}


def test_text_queries_need_a_text_encoder(tmp_path):
    cfg = _copy_example(tmp_path / "set")
    with pytest.raises(ValueError, match="text-only queries need a retriever with a text encoder"):
        evaluate_benchmark(ColourRetriever(), cfg, tmp_path / "out", num_workers=0)


def test_a_line_needs_a_reference_or_a_text(tmp_path):
    from covr.data.errors import AnnotationError

    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "x", "target": "a"}) + "\n")
    with pytest.raises(AnnotationError, match=r"q.jsonl: line 1: needs a 'reference', a 'text' or both"):
        load_benchmark("cir_jsonl", {"annotation": str(tmp_path / "q.jsonl"), "image_root": str(tmp_path)})
