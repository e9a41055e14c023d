"""`python test.py benchmark=[egocvr,egocvr_local,tf_covr,webvid_covr,dense_webvid_covr]`: every composed
video benchmark in one process with a real tiny checkpoint, the configs' official layouts under
COVR_DATA, one table, one results.json stating each option; galleries shared through the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import torch
from layouts_video import make_dense_webvid_covr, make_egocvr, make_tf_covr

from conftest import REPO, tiny_model_config
from covr.models import build_retriever, checkpoint_payload

BENCHMARKS = ("egocvr", "egocvr_local", "tf_covr", "webvid_covr", "dense_webvid_covr")


def test_test_py_runs_every_video_benchmark_in_one_table(tmp_path):
    make_egocvr(tmp_path / "EgoCVR")
    make_tf_covr(tmp_path / "TF-CoVR")
    dense = make_dense_webvid_covr(tmp_path)  # annotations/... and WebVid/8M/train/... under COVR_DATA
    (tmp_path / "Dense-WebVid-CoVR/annotations").mkdir(parents=True)
    shutil.copy(dense["csv"], tmp_path / "Dense-WebVid-CoVR/annotations/dense-webvid8m-covr_test.csv")
    (tmp_path / "WebVid-CoVR/annotation").mkdir(parents=True)
    shutil.copy(dense["csv"], tmp_path / "WebVid-CoVR/annotation/webvid8m-covr_test.csv")  # the same test videos
    cfg = tiny_model_config()
    model = build_retriever(cfg)
    torch.save({"covr": checkpoint_payload(model, cfg), "state_dict": {"model." + k: v for k, v in model.state_dict().items()}}, tmp_path / "m.ckpt")
    env = {**os.environ, "COVR_DATA": str(tmp_path), "COVR_CACHE": str(tmp_path / "cache"), "COVR_OUTPUT": str(tmp_path / "runs")}
    env["HF_HUB_OFFLINE"] = "1"
    cmd = [sys.executable, str(REPO / "test.py"), f"checkpoint={tmp_path / 'm.ckpt'}", f"benchmark=[{','.join(BENCHMARKS)}]",
           "run_id=v", "num_workers=0", "test_batch_size=4"]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "runs" / "test" / "v"
    results = json.loads((out / "results.json").read_text())
    assert list(results) == list(BENCHMARKS)
    lines = run.stdout.splitlines()
    assert lines[-1] == f"results: {out / 'results.json'}"
    for name in BENCHMARKS:
        assert sum(line.startswith(name + " ") for line in lines) == 1, name
    ego, local, tf, dense_result = results["egocvr"], results["egocvr_local"], results["tf_covr"], results["dense_webvid_covr"]
    assert set(ego["metrics"]) == {"R@1", "R@5", "R@10"} and set(local["metrics"]) == {"R@1", "R@2", "R@3"}
    assert ego["protocol"]["name"] == "egocvr" and tf["protocol"]["name"] == "tf_covr" and dense_result["protocol"]["name"] == "covr2"
    assert {"text", "caption", "min_gallery_size", "exclude_query_clip", "video_source", "target_frames"} <= set(ego["options"])
    assert tf["options"]["numbers_to_words"] is True and tf["options"]["text_rule"] == "tf_covr" and "mAP@50" in tf["metrics"]
    long_edits = sum(len(q["edit"].split()) > 30 for q in dense["queries"])
    assert local["counts"]["queries_unscored"] == 1 and dense_result["counts"]["texts_cut"] == long_edits == 4
    # one encoding per clip: the local galleries and Dense-WebVid-CoVR's videos come from the cache
    assert ego["tasks"]["egocvr/global"]["gallery_cache"] == "miss" and local["tasks"]["egocvr_local/local"]["gallery_cache"] == "hit"
    assert results["webvid_covr"]["tasks"]["webvid_covr/test"]["gallery_cache"] == "miss"
    assert dense_result["tasks"]["dense_webvid_covr/test"]["gallery_cache"] == "hit"
