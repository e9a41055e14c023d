"""The training methods as options of the real training path (README "Training methods"): HUG trains
from the toy experiment and its checkpoint is evaluated by the uncertainty-aware distance; ReCALL's
grouped batches, corrective triplets and a memory bank resume exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_model_config
from covr.data.annotations import read_webvid_covr_csv
from covr.data.toy import generate_toy_dataset
from covr.eval import evaluate_benchmark
from covr.models import build_retriever
from helpers_training import REPO, env_for, run_train

# one stage (X-Aligner + text encoder), 96 toy rows in batches of 32: 3 steps per epoch, 2 epochs
SHORT = ["stages=null", "model.stage=2", "trainer.max_epochs=2", "test_after_training=false", "data.toy.num_train=96",
         "data.batch_size=32", "checkpoint.every_n_train_steps=1", "trainer.log_every_n_steps=1"]  # fmt: skip


def test_evaluation_ranks_by_the_uncertainty_distance(tmp_path):
    """similarity=uncertainty: every query's ranking is by -(||mu_q - mu_c||^2 + ||s_c||^2), s_c from the
    model's g_V on the gallery column (recomputed here from the evaluator's own embedding dump)."""
    root = generate_toy_dataset(tmp_path / "toy", num_train=8, num_val=4, num_test=12, num_frames=4, image_size=32)
    model = build_retriever(tiny_model_config(uncertainty={"num_heads": 2})).eval()
    benchmark = {"reader": "webvid_covr", "annotation": str(root["test"]), "video_root": str(root["video_root"]), "split": "test",
                 "protocol": "covr", "target_frames": 4}  # fmt: skip
    result = evaluate_benchmark(model, benchmark, tmp_path / "out", num_workers=0, similarity="uncertainty", save_rankings=True, save_embeddings=True)
    assert result["options"]["similarity_mode"] == "uncertainty"
    folder = tmp_path / "out" / "webvid_covr" / "test"
    dump = np.load(folder / "embeddings.npz")
    mask = torch.from_numpy(dump["gallery_frame_mask"]).float()
    tokens = (torch.from_numpy(dump["gallery_tokens"]) * mask[..., None, None]).sum(1) / mask.sum(1)[:, None, None]  # uniform frames
    with torch.no_grad():
        variance = model.target_variance(tokens).flatten(1).sum(1)
    gallery = list(dump["gallery_ids"])
    for line, query, reference in zip(open(folder / "rankings.jsonl"), torch.from_numpy(dump["query_tokens"]), dump["reference_ids"]):
        ranking = json.loads(line)
        d = ((query[None] - tokens) ** 2).flatten(1).sum(1) + variance
        expected = [(gallery[j], -d[j].item()) for j in torch.argsort(d).tolist() if gallery[j] != reference]
        assert ranking["ids"] == [i for i, _ in expected][: len(ranking["ids"])]
        assert ranking["scores"] == pytest.approx([s for _, s in expected][: len(ranking["ids"])], abs=1e-4)
    # covr2 scores the query's own video -10, below every cosine; -distance has no such floor: it is removed instead
    evaluate_benchmark(model, {**benchmark, "protocol": "covr2"}, tmp_path / "covr2", num_workers=0, similarity="uncertainty", save_rankings=True)
    for line in open(tmp_path / "covr2" / "webvid_covr" / "test" / "rankings.jsonl"):
        ranking = json.loads(line)
        assert ranking["reference"] not in ranking["ids"] and min(ranking["scores"]) < -10  # distances beyond the fixed mask score


@pytest.mark.slow
def test_hug_trains_from_the_toy_experiment_and_tests_by_the_uncertainty_distance(tmp_path):
    run_train(tmp_path, "run_id=hug", "loss=hug", *SHORT)
    run = tmp_path / "runs" / "toy" / "hug"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6 and checkpoint["covr"]["model_config"]["uncertainty"]["num_heads"] == 4
    header = open(run / "logs" / "metrics.csv").readline()
    assert all(name in header for name in ("train/loss_holistic", "train/loss_fine_grained", "train/loss_coordination", "train/scale"))
    cmd = [sys.executable, str(REPO / "test.py"), f"checkpoint={run / 'checkpoints' / 'final.ckpt'}", "benchmark=toy", "similarity=uncertainty",
           "benchmark.toy.protocol=covr", "num_workers=0", f"hydra.run.dir={tmp_path / 'test'}"]  # fmt: skip
    tested = subprocess.run(cmd, cwd=REPO, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert tested.returncode == 0, tested.stderr[-3000:]
    results = json.loads(Path(tested.stdout.strip().splitlines()[-1].split("results: ")[-1]).read_text())
    assert results["toy"]["options"]["similarity_mode"] == "uncertainty" and results["toy"]["metrics"]["R@50"] > 0


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_grouped_batches_corrective_triplets_and_memory_bank_resume_exactly(tmp_path):
    """loss=recall (InfoNCE + intra-group triplets, batches grouped by reference) with corrective
    triplets and a memory bank, killed mid-epoch and resumed: the weights, the bank and the step
    count equal those of the uninterrupted run (the bank travels in the checkpoint)."""
    toy = generate_toy_dataset(tmp_path / "data" / "toy", seed=0, num_train=88, num_val=30, num_test=40, num_frames=8, image_size=64)  # = the runs' data config
    ann = read_webvid_covr_csv(toy["train"])
    assert len(ann) == 88
    triplets = tmp_path / "corrected.jsonl"
    triplets.write_text("".join(json.dumps({"reference": ann.reference_id(r), "edit": f"make it number {r}", "target": ann.target_id(r + 7)}) + "\n"
                                for r in range(0, 40, 5)))  # fmt: skip
    options = [*SHORT, "loss=recall", "loss.memory_bank.size=80", f"data.corrective_triplets={triplets}", "data.toy.num_train=88"]
    run_train(tmp_path, "run_id=uninterrupted", *options)
    killed = run_train(tmp_path, "run_id=resumed", *options, "+callbacks.kill._target_=covr.training.callbacks.KillAtStep", "+callbacks.kill.step=2", check=False)
    assert killed.returncode == 17, killed.stderr[-3000:]
    run_train(tmp_path, "run_id=resumed", *options)
    ref, got = _state(tmp_path / "runs" / "toy" / "uninterrupted"), _state(tmp_path / "runs" / "toy" / "resumed")
    assert got["global_step"] == ref["global_step"] == 6  # 88 CSV rows + 8 triplets = 96 rows: 3 batches of 32 per epoch
    assert int(ref["state_dict"]["loss.bank.filled"]) == 80 and ref["state_dict"].keys() == got["state_dict"].keys()
    for name, value in ref["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)
    rows = [line for line in open(tmp_path / "runs" / "toy" / "resumed" / "logs" / "metrics.csv") if line.strip()]
    assert "train/loss_triplet" in rows[0] and "train/bank_used" in rows[0]
