"""The evaluator with a real (tiny, random) covr retriever, not only the colour test double: on
tiny official-layout fixtures its metrics equal those of a brute-force ranking of the same model."""

from __future__ import annotations

import pytest
import torch
from helpers_eval import brute_force_rankings, ref_map, ref_recall
from layouts_eval import make_circo, make_cir_jsonl, make_cirr, make_fashioniq

from conftest import tiny_model_config
from covr.eval import evaluate_benchmark
from covr.models import build_retriever


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_retriever(tiny_model_config()).eval()


def _evaluate(model, cfg, tmp_path, mode="mean"):
    """covr's protocol (the reference removed), as the brute force ranks."""
    return evaluate_benchmark(model, {"protocol": "covr", **cfg}, tmp_path / "out", batch_size=3, num_workers=0, similarity=mode)


@pytest.mark.parametrize("mode", ["mean", "max_target_token", "max_token_pair"])
def test_cirr_val_with_a_tiny_model(model, tmp_path, mode):
    fixture = make_cirr(tmp_path / "CIRR", "val")
    metrics = _evaluate(model, {"reader": "cirr", "root": str(tmp_path / "CIRR"), "split": "val"}, tmp_path, mode)["metrics"]
    brute = brute_force_rankings(model, fixture["gallery"], fixture["queries"], mode)
    targets = [q["target"] for q in fixture["queries"]]
    for k in (1, 5, 10, 50):
        assert metrics[f"R@{k}"] == pytest.approx(ref_recall(brute, targets, k))


def test_fashioniq_with_a_tiny_model(model, tmp_path):
    fixture = make_fashioniq(tmp_path / "FIQ", categories=("dress", "toptee"))
    result = _evaluate(model, {"reader": "fashioniq", "root": str(tmp_path / "FIQ"), "categories": ["dress", "toptee"]}, tmp_path)
    for category in ("dress", "toptee"):
        brute = brute_force_rankings(model, fixture[category]["gallery"], fixture[category]["queries"], "mean")
        targets = [q["target"] for q in fixture[category]["queries"]]
        task = next(v for k, v in result["tasks"].items() if category in k)
        for k in (10, 50):
            assert task["metrics"][f"R@{k}"] == pytest.approx(ref_recall(brute, targets, k))


def test_circo_with_a_tiny_model(model, tmp_path):
    fixture = make_circo(tmp_path / "CIRCO", "val")
    metrics = _evaluate(model, {"reader": "circo", "root": str(tmp_path / "CIRCO"), "split": "val"}, tmp_path)["metrics"]
    brute = brute_force_rankings(model, fixture["gallery"], fixture["queries"], "mean")
    for k in (5, 10, 25, 50):
        assert metrics[f"mAP@{k}"] == pytest.approx(ref_map(brute, [q["gts"] for q in fixture["queries"]], k))


def test_edir_style_jsonl_with_a_tiny_model(model, tmp_path):
    fixture = make_cir_jsonl(tmp_path / "EDIR")
    cfg = {"reader": "cir_jsonl", "name": "edir", "annotation": str(tmp_path / "EDIR" / "edir.jsonl"),
           "image_root": str(tmp_path / "EDIR" / "images"), "gallery_file": str(tmp_path / "EDIR" / "gallery.txt"), "image_extension": ".jpg"}  # fmt: skip
    result = _evaluate(model, cfg, tmp_path)
    queries = fixture["queries"]
    brute = brute_force_rankings(model, fixture["gallery"], queries, "mean")
    assert result["metrics"]["mAP@10"] == pytest.approx(ref_map(brute, [q["gts"] for q in queries], 10))
    by_category = next(iter(result["tasks"].values()))["by_category"]["category"]
    for value, metrics in by_category.items():
        rows = [i for i, q in enumerate(queries) if q["categories"]["category"] == value]
        assert metrics["R@5"] == pytest.approx(ref_recall([brute[i] for i in rows], [queries[i]["target"] for i in rows], 5))
