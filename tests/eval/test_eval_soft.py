"""SoFT re-ranking (rerank=soft) through the one evaluator: a hand-made case whose final scores are
computed by hand, a tiny real retriever against an independent implementation of the formula (the
whole gallery re-scored, CIRR's subset ranking included), and one-line errors for bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_eval import load_tensor
from layouts_eval import make_cir_jsonl, make_cirr
from PIL import Image
from torch import nn

from conftest import tiny_model_config
from covr.data.errors import AnnotationError
from covr.eval import evaluate_benchmark
from covr.eval.datasets.base import Query
from covr.eval.protocols import resolve_protocol
from covr.eval.rerank import read_constraints, soft_scores
from covr.eval.scoring import Columns, rank_task
from covr.models import build_retriever


def test_soft_scores_equal_a_hand_computation():
    # s = 0.5, r = 0.8, p = 0.2: soft = 0.5 (0.8 + 1 - 0.2) / 2 = 0.4; lambda 0.5: 0.25 + 0.2 = 0.45
    images = torch.tensor([[1.0, 0.0]])
    prescriptive, proscriptive = torch.tensor([[0.8, 0.6]]), torch.tensor([[0.2, 0.9798]])
    assert soft_scores(torch.tensor([[0.5]]), prescriptive, proscriptive, images).item() == pytest.approx(0.4)
    assert soft_scores(torch.tensor([[0.5]]), prescriptive, proscriptive, images, 0.5).item() == pytest.approx(0.45)
    assert soft_scores(torch.tensor([[0.5]]), torch.zeros(1, 2), torch.zeros(1, 2), images).item() == pytest.approx(0.25)  # no constraint: s / 2


class ColourWords(nn.Module):
    """A retriever double with hand-chosen embeddings (E = 3, one token): an image embeds as the
    one-hot of its dominant channel (red e1, green e2, blue e3); every query as (0.5, 0.7, 0.2); the
    words red / green / blue as e1 / e2 / e3."""

    image_size, identity = 8, "colour-words"

    def encode_target_frames(self, frames, frame_mask=None):
        return nn.functional.one_hot(frames.mean(dim=(-1, -2)).argmax(-1), 3).float()[:, :, None]  # [B, F, 1, 3]

    def encode_query(self, frames, edit_text, caption=None, frame_mask=None):
        return torch.tensor([[[0.5, 0.7, 0.2]]]).repeat(len(edit_text), 1, 1)

    def encode_text(self, texts):
        return torch.stack([torch.eye(3)[("red", "green", "blue").index(t)] for t in texts])


def _colour_set(root):
    (root / "images").mkdir(parents=True)
    for name, rgb in {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "grey": (128, 128, 128)}.items():
        Image.new("RGB", (8, 8), rgb).save(root / "images" / f"{name}.png")
    lines = [{"id": f"q{i}", "reference": "grey", "text": "make it colourful", "target": "red"} for i in range(3)]
    (root / "queries.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "gallery.txt").write_text("red\ngreen\nblue\n")
    constraints = [("red", "green"), ("", ""), ("", "red")]
    (root / "soft.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "prescriptive": p, "proscriptive": n}) + "\n" for i, (p, n) in enumerate(constraints)))
    return {"reader": "cir_jsonl", "annotation": str(root / "queries.jsonl"), "image_root": str(root / "images"),
            "gallery_file": str(root / "gallery.txt"), "image_extension": ".png", "protocol": "covr"}  # fmt: skip


def _rankings(folder):
    return [json.loads(line) for line in (folder / "rankings.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_soft_on_a_hand_made_case_equals_the_hand_computation(tmp_path, lam):
    cfg = _colour_set(tmp_path / "set")
    result = evaluate_benchmark(ColourWords(), {**cfg, "rerank": "soft", "constraint_file": str(tmp_path / "set" / "soft.jsonl"),
                                "soft_lambda": lam}, tmp_path / "out", num_workers=0, save_rankings=True)  # fmt: skip
    rows = _rankings(tmp_path / "out" / "cir_jsonl" / "test")
    # s = (0.5, 0.7, 0.2) for (red, green, blue); q0: r = (1, 0, 0), p = (0, 1, 0) -> soft = (0.5, 0, 0.1);
    # q1: no constraint -> soft = s / 2 = (0.25, 0.35, 0.1); q2: p = (1, 0, 0) -> soft = (0, 0.35, 0.1)
    hand = {1.0: [{"red": 0.5, "blue": 0.1, "green": 0.0}, {"green": 0.35, "red": 0.25, "blue": 0.1}, {"green": 0.35, "blue": 0.1, "red": 0.0}],
            0.5: [{"red": 0.5, "green": 0.35, "blue": 0.15}, {"green": 0.525, "red": 0.375, "blue": 0.15}, {"green": 0.525, "red": 0.25, "blue": 0.15}]}  # fmt: skip
    for row, expected in zip(rows, hand[lam]):
        assert row["ids"] == list(expected)
        assert row["scores"] == pytest.approx(list(expected.values()), abs=1e-6)
    assert result["protocol"]["name"] == "covr+soft" and result["rescoring"]["soft"]["lambda"] == lam
    assert (result["rescoring"]["soft"]["prescriptive"], result["rescoring"]["soft"]["proscriptive"]) == (1, 2)
    assert result["metrics"]["R@1"] == pytest.approx(100 / 3)  # only q0's order puts red first


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_retriever(tiny_model_config()).eval()


def _independent(model, queries, gallery, constraints, lam, mode="mean"):
    """Full ranking (ids) and scores per query, from the model's encoders and the formula, one pair at a time."""
    with torch.no_grad():
        g = {i: model.encode_target(load_tensor(p, model.image_size))[0] for i, p in gallery}  # [Q, E]
        out = []
        for q in queries:
            qt = model.encode_query(load_tensor(q["path"], model.image_size), [q["text"]])[0]
            plus, minus = (model.encode_text([c])[0] if c else None for c in constraints[q["id"]])
            scores = {}
            for item, t in g.items():
                s = float(qt.mean(0) @ t.mean(0)) if mode == "mean" else max(float(a @ b) for a in qt for b in t)
                image = t.mean(0) / t.mean(0).norm()
                r = float(plus @ image) if plus is not None else 0.0
                p = float(minus @ image) if minus is not None else 0.0
                scores[item] = (1 - lam) * s + lam * s * (r + 1 - p) / 2
            out.append(scores)
    return out


def _write_constraints(path, queries, words=("cat", "dog", "red")):
    table = {q["id"]: (words[n % 3], words[(n + 1) % 3] if n % 2 else "") for n, q in enumerate(queries)}
    path.write_text("".join(json.dumps({"id": k, "prescriptive": p, "proscriptive": n}) + "\n" for k, (p, n) in table.items()))
    return table


def test_soft_with_a_tiny_model_equals_an_independent_implementation(model, tmp_path):
    fixture = make_cir_jsonl(tmp_path / "EDIR")
    table = _write_constraints(tmp_path / "soft.jsonl", fixture["queries"])
    cfg = {"reader": "cir_jsonl", "name": "edir", "annotation": str(tmp_path / "EDIR" / "edir.jsonl"), "protocol": "covr",
           "image_root": str(tmp_path / "EDIR" / "images"), "gallery_file": str(tmp_path / "EDIR" / "gallery.txt"),
           "image_extension": ".jpg", "constraint_file": str(tmp_path / "soft.jsonl"), "soft_lambda": 0.7}  # fmt: skip
    evaluate_benchmark(model, cfg, tmp_path / "out", batch_size=4, num_workers=0, save_rankings=True, rerank="soft")
    expected = _independent(model, fixture["queries"], fixture["gallery"], table, 0.7)
    for row, q, scores in zip(_rankings(tmp_path / "out" / "edir" / "test"), fixture["queries"], expected):
        order = sorted((i for i in scores if i not in q["exclude"]), key=lambda i: -scores[i])
        assert row["ids"] == order[: len(row["ids"])]
        assert row["scores"] == pytest.approx([scores[i] for i in row["ids"]], abs=1e-5)


def test_soft_reranks_cirr_subsets_too(model, tmp_path):
    fixture = make_cirr(tmp_path / "CIRR", "val")
    table = _write_constraints(tmp_path / "soft.jsonl", fixture["queries"])
    cfg = {"reader": "cirr", "root": str(tmp_path / "CIRR"), "split": "val", "protocol": "covr", "rerank": "soft", "constraint_file": str(tmp_path / "soft.jsonl")}
    evaluate_benchmark(model, cfg, tmp_path / "out", batch_size=4, num_workers=0, save_rankings=True, similarity="max_token_pair")
    expected = _independent(model, fixture["queries"], fixture["gallery"], table, 1.0, "max_token_pair")
    for row, q, scores in zip(_rankings(tmp_path / "out" / "cirr" / "val"), fixture["queries"], expected):
        members = [m for m in dict.fromkeys(q["subset"]) if m != q["reference"]]
        assert row["subset"] == sorted(members, key=lambda m: -scores[m])


def test_bad_constraint_files_fail_in_one_line(model, tmp_path):
    fixture = make_cir_jsonl(tmp_path / "EDIR", n_queries=3)
    cfg = {"reader": "cir_jsonl", "annotation": str(tmp_path / "EDIR" / "edir.jsonl"), "image_root": str(tmp_path / "EDIR" / "images"),
           "image_extension": ".jpg", "rerank": "soft"}  # fmt: skip
    with pytest.raises(ValueError, match="needs the benchmark's constraint_file"):
        evaluate_benchmark(model, cfg, tmp_path / "out", num_workers=0)
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"id": fixture["queries"][0]["id"], "prescriptive": "cat"}) + "\n")
    with pytest.raises(AnnotationError, match=r"partial.jsonl: no constraints for query 'q1' \(2 of 3 queries missing\)"):
        evaluate_benchmark(model, {**cfg, "constraint_file": str(partial)}, tmp_path / "out", num_workers=0)
    for text, problem in [('{"id": "q0", "prescriptive": 3}', "must be strings"), ('{"id": "q0"}\n{"id": "q0"}', "appears twice"),
                          ("{oops", "line 1: not valid JSON")]:  # fmt: skip
        (tmp_path / "bad.jsonl").write_text(text + "\n")
        with pytest.raises(AnnotationError, match=problem):
            read_constraints(tmp_path / "bad.jsonl")


def test_rescoring_needs_the_exact_backend():
    queries = [Query(id="a", reference="x", reference_path=None, text="t")]
    columns = Columns(["x", "y"], ["x", "y"], torch.eye(2))
    with pytest.raises(ValueError, match="use backend 'exact'"):
        rank_task(resolve_protocol("cir_jsonl"), queries, torch.ones(1, 2), columns, 1, False, "faiss", rescore=lambda r, c, s: s)
