"""Score fusion (`fusion:` benchmark option) through the one evaluator with a tiny real retriever:
artifacts from .npz embeddings, text files and image folders keyed by id reach the right queries
and gallery items (scores equal an independent computation from the model's own encoders), and bad
artifacts fail in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers_eval import load_tensor
from layouts_eval import make_cir_jsonl

from conftest import tiny_model_config
from covr.data.errors import AnnotationError
from covr.eval import evaluate_benchmark
from covr.models import build_retriever


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_retriever(tiny_model_config()).eval()


@pytest.fixture
def edir(tmp_path):
    fixture = make_cir_jsonl(tmp_path / "EDIR", n_images=10, n_queries=6)
    cfg = {"reader": "cir_jsonl", "name": "edir", "annotation": str(tmp_path / "EDIR" / "edir.jsonl"), "protocol": "covr",
           "image_root": str(tmp_path / "EDIR" / "images"), "gallery_file": str(tmp_path / "EDIR" / "gallery.txt"), "image_extension": ".jpg"}  # fmt: skip
    return fixture, cfg


def n(v):
    return v / v.norm()


def _run(model, cfg, fusion, out):
    result = evaluate_benchmark(model, {**cfg, "fusion": fusion}, out, batch_size=4, num_workers=0, save_rankings=True)
    return result, [json.loads(line) for line in (out / "edir" / "test" / "rankings.jsonl").read_text().splitlines()]


def _check(rows, fixture, score):
    """Every query's ranking equals the independent scores (reference removed, ties to gallery order)."""
    gallery = [i for i, _ in fixture["gallery"]]
    for row, q in zip(rows, fixture["queries"]):
        expected = {i: score(q, i) for i in gallery if i not in q["exclude"]}
        assert row["ids"] == sorted(expected, key=lambda i: (-expected[i], gallery.index(i)))
        assert row["scores"] == pytest.approx([expected[i] for i in row["ids"]], abs=1e-5)


def _image(model, path):
    return model.encode_target(load_tensor(path, model.image_size))[0].mean(0)


def _text(model, text):
    return model.encode_text([text])[0]


def test_paracosm_from_image_folders_and_descriptions(model, edir, tmp_path):
    fixture, cfg = edir
    paths = dict(fixture["gallery"])
    (tmp_path / "mental").mkdir()
    (tmp_path / "twins").mkdir()
    for k, q in enumerate(fixture["queries"]):  # a "mental image" per query: some gallery image, named by query id
        shutil.copy(fixture["gallery"][(k * 3) % 10][1], tmp_path / "mental" / f"{q['id']}.jpg")
    for k, (item, path) in enumerate(fixture["gallery"]):  # each item's "twin": the next image
        shutil.copy(fixture["gallery"][(k + 1) % 10][1], tmp_path / "twins" / f"{item}.png" if k % 2 else tmp_path / "twins" / f"{item}.jpg")
    descriptions = {q["id"]: f"a cat {k}" for k, q in enumerate(fixture["queries"])}
    (tmp_path / "desc.json").write_text(json.dumps(descriptions))
    fusion = {"method": "paracosm", "mental_image": str(tmp_path / "mental"), "mental_description": str(tmp_path / "desc.json"), "twin": str(tmp_path / "twins")}
    result, rows = _run(model, cfg, fusion, tmp_path / "out")
    assert result["protocol"]["name"] == "covr+paracosm"
    with torch.no_grad():
        def score(q, item):
            mental = _image(model, tmp_path / "mental" / f"{q['id']}.jpg")
            query = 0.3 * n(mental + _text(model, descriptions[q["id"]])) + 0.7 * n(_text(model, q["text"]))
            twin = next((tmp_path / "twins").glob(f"{item}.*"))
            return float(query @ (n(_image(model, paths[item])) + n(_image(model, twin))))

        _check(rows, fixture, score)


def test_cvsi_from_npz_and_text_parts(model, edir, tmp_path):
    fixture, cfg = edir
    paths = dict(fixture["gallery"])
    rng = np.random.default_rng(1)
    pseudo = {q["id"]: rng.normal(size=16).astype(np.float32) for q in fixture["queries"]}
    np.savez(tmp_path / "pseudo.npz", ids=np.array(list(pseudo)), embeddings=np.stack(list(pseudo.values())))
    captions = {item: f"a photo {k}" for k, (item, _) in enumerate(fixture["gallery"])}
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in captions.items()))
    fusion = {"method": "cvsi", "query_parts": [["text", 0.2], [str(tmp_path / "pseudo.npz"), 0.6], ["reference", 0.2]],
              "gallery_parts": [["image", 0.9], [str(tmp_path / "captions.jsonl"), 0.1]]}  # fmt: skip
    _, rows = _run(model, cfg, fusion, tmp_path / "out")
    with torch.no_grad():
        def score(q, item):
            parts = [(0.2, _text(model, q["text"])), (0.6, torch.from_numpy(pseudo[q["id"]])), (0.2, _image(model, q["path"]))]
            targets = [(0.9, _image(model, paths[item])), (0.1, _text(model, captions[item]))]
            return sum(a * b * float(n(x) @ n(y)) for a, x in parts for b, y in targets)

        _check(rows, fixture, score)


def test_xr_from_descriptions_captions_and_verification(model, edir, tmp_path):
    fixture, cfg = edir
    paths = dict(fixture["gallery"])
    descriptions = {q["id"]: [f"a cat {k}", "a red dog"] if k % 2 else [f"a cat {k}"] for k, q in enumerate(fixture["queries"])}
    captions = {item: f"a photo {k}" for k, (item, _) in enumerate(fixture["gallery"])}
    passed = {q["id"]: {fixture["gallery"][k % 10][0]: 2, fixture["gallery"][(k + 4) % 10][0]: 1} for k, q in enumerate(fixture["queries"])}
    for name, data in (("desc.json", descriptions), ("captions.json", captions), ("passed.json", passed)):
        (tmp_path / name).write_text(json.dumps(data))
    fusion = {"method": "xr", "descriptions": str(tmp_path / "desc.json"), "gallery_captions": str(tmp_path / "captions.json"),
              "verification": str(tmp_path / "passed.json"), "rerank_top": 6}  # fmt: skip
    _, rows = _run(model, cfg, fusion, tmp_path / "out")
    gallery = [i for i, _ in fixture["gallery"]]
    with torch.no_grad():
        for row, q in zip(rows, fixture["queries"]):
            fused = dict.fromkeys(gallery, 0.0)
            for d in descriptions[q["id"]]:
                s = {i: 0.85 * float(n(_text(model, d)) @ n(_image(model, paths[i]))) + 0.15 * float(n(_text(model, d)) @ n(_text(model, captions[i]))) for i in gallery}
                for rank, i in enumerate(sorted(gallery, key=lambda i: (-s[i], gallery.index(i))), start=1):
                    fused[i] += 1 / (60 + rank)
            shortlist = sorted(gallery, key=lambda i: (-fused[i], gallery.index(i)))[:6]
            low, high = min(fused[i] for i in shortlist), max(fused[i] for i in shortlist)
            final = {i: passed[q["id"]].get(i, 0) * (fused[i] - low) / (high - low) for i in shortlist}
            expected = [i for i in sorted(shortlist, key=lambda i: -final[i]) if i not in q["exclude"]]  # stable: stage-1 order among ties
            assert row["ids"] == expected
            assert row["scores"] == pytest.approx([final[i] for i in expected], abs=2e-6)


def test_bad_artifacts_fail_in_one_line(model, edir, tmp_path):
    fixture, cfg = edir
    ids = [q["id"] for q in fixture["queries"]]
    np.savez(tmp_path / "wide.npz", ids=np.array(ids), embeddings=np.zeros((len(ids), 99), dtype=np.float32))
    np.savez(tmp_path / "short.npz", ids=np.array(ids[:2]), embeddings=np.zeros((2, 16), dtype=np.float32))
    (tmp_path / "bad.json").write_text(json.dumps({ids[0]: 3}))
    cases = [
        ({"method": "cvsi", "query_parts": [[str(tmp_path / "wide.npz"), 1.0]], "gallery_parts": [["image", 1.0]]}, "embeddings of size 99, but the retriever's are 16"),
        ({"method": "cvsi", "query_parts": [[str(tmp_path / "short.npz"), 1.0]], "gallery_parts": [["image", 1.0]]}, r"short.npz: no query artifact for id 'q2' \(4 of 6"),
        ({"method": "cvsi", "query_parts": [[str(tmp_path / "bad.json"), 1.0]], "gallery_parts": [["image", 1.0]]}, "expected a text or a list of texts"),
        ({"method": "cvsi", "query_parts": ["text"], "gallery_parts": [["image", 1.0]]}, r"list of \[source, weight\] pairs"),
        ({"method": "paracosm", "mental_image": "x"}, "needs fusion.mental_description, fusion.twin"),
        ({"method": "mix"}, "fusion.method must be one of paracosm, xr, cvsi"),
        ({"method": "xr", "descriptions": "d.json", "gallery_captions": "c.json", "verifcation": "v.json"}, r"unknown key\(s\) \['verifcation'\]"),
    ]  # fmt: skip
    for fusion, problem in cases:
        with pytest.raises((AnnotationError, ValueError), match=problem):
            evaluate_benchmark(model, {**cfg, "fusion": fusion}, tmp_path / "out", num_workers=0)


def test_subsets_and_blocks_of_a_rank_fusion_use_whole_rows():
    """CIRR's subset ranking under XR orders the members by their scores against the whole gallery,
    and the chunked top-K (small blocks forced) equals one full-matrix ranking."""
    from covr.eval.rerank import XRRescorer
    from covr.eval.topk import rank_candidates, topk_similarity

    g = torch.Generator().manual_seed(0)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    rescore = XRRescorer(unit(5, 3, 8), torch.ones(5, 3, dtype=torch.bool), unit(40, 8), unit(40, 8), None)
    query, gallery = unit(5, 8), unit(40, 8)
    full = rescore(torch.arange(5), torch.arange(40), torch.zeros(5, 40))  # [5, 40] whole rows
    members = [[3, 7, 11, 30], [0, 1, 2], [39, 5], [8], [12, 13, 14, 15, 16]]
    got = rank_candidates(query, gallery, members, "mean", rescore)
    assert got == [sorted(m, key=lambda c: (-full[r, c].item(), c)) for r, m in enumerate(members)]
    values, indices = topk_similarity(query, gallery, 10, rescore=rescore, max_block_elements=40 * 16 * 2)  # two rows per block
    assert indices.tolist() == [sorted(range(40), key=lambda c: (-full[r, c].item(), c))[:10] for r in range(5)]
    assert torch.allclose(values, full.gather(1, indices).float())
