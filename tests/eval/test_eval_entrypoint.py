"""`python test.py checkpoint=... benchmark=[...]` runs several benchmarks in one process with a real
tiny covr checkpoint: one table, results.json (path printed last) and the server submission files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from conftest import REPO, tiny_model_config
from covr.models import build_retriever, checkpoint_payload
from layouts_eval import make_circo, make_cirr, make_fashioniq


def test_test_py_runs_several_benchmarks(tmp_path):
    make_cirr(tmp_path / "CIRR", split="test1")
    make_fashioniq(tmp_path / "FashionIQ", categories=("dress", "shirt"))
    make_circo(tmp_path / "CIRCO", split="val")
    cfg = tiny_model_config()
    model = build_retriever(cfg)
    torch.save({"covr": checkpoint_payload(model, cfg), "state_dict": {"model." + k: v for k, v in model.state_dict().items()}}, tmp_path / "m.ckpt")
    env = {**os.environ, "COVR_DATA": str(tmp_path), "COVR_CACHE": str(tmp_path / "cache"), "COVR_OUTPUT": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "test.py"), f"checkpoint={tmp_path / 'm.ckpt'}", "benchmark=[cirr,fashioniq,circo]",
           "benchmark.cirr.split=test1", "benchmark.fashioniq.categories=[dress,shirt]", "run_id=t", "num_workers=0",
           "test_batch_size=4", "similarity=max_target_token", "save_rankings=true"]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out_dir = tmp_path / "runs" / "test" / "t"
    assert run.stdout.strip().splitlines()[-1] == f"results: {out_dir / 'results.json'}"
    results = json.loads((out_dir / "results.json").read_text())
    assert set(results) == {"cirr", "fashioniq", "circo"}
    assert results["cirr"]["split"] == "test1" and results["circo"]["metrics"]["mAP@5"] >= 0
    assert results["fashioniq"]["options"]["similarity_mode"] == "max_target_token"
    assert results["fashioniq"]["protocol"]["name"] == "covr2+max_target_token"
    assert (out_dir / "fashioniq" / "val" / "shirt" / "rankings.jsonl").is_file()  # dumps live in task folders
    for line in ("cirr", "fashioniq", "circo"):
        assert any(row.startswith(line) for row in run.stdout.splitlines())
    submissions = sorted(p.name for p in out_dir.glob("*.json") if p.name != "results.json")
    assert len(submissions) == 2 and all("cirr" in s for s in submissions), submissions
    # a second run hits the gallery cache (and writes the visual report: test.yaml's report options reach the evaluator)
    again_cmd = cmd[:-5] + ["run_id=t2", "num_workers=0", "test_batch_size=4", "similarity=max_target_token", "report=true", "report_queries=3"]
    again = subprocess.run(again_cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((tmp_path / "runs" / "test" / "t2" / "results.json").read_text())
    assert results["circo"]["tasks"]["circo/val"]["gallery_cache"] == "miss"
    assert second["circo"]["tasks"]["circo/val"]["gallery_cache"] == "hit"
    assert second["circo"]["metrics"] == results["circo"]["metrics"]
    for name in ("cirr", "fashioniq", "circo"):
        page = (tmp_path / "runs" / "test" / "t2" / "report" / f"{name}.html").read_text()
        assert second[name]["report"]["png"].endswith(f"report/{name}.png") and page.count('<article class="query') == 3 * (2 if name == "fashioniq" else 1)
