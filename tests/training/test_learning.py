"""The real entry point learns: a short toy run beats 3x chance test R@1 (about a minute).

The full toy job adapts the random backbone first (stage 0, minutes); here stage 2 alone trains
X-Aligner and the Q-Former text path against the random frozen target space, which is enough to
beat chance by far on the small test gallery."""

from __future__ import annotations

import json

import pytest

from helpers_training import run_train


@pytest.mark.slow
def test_toy_run_learns(tmp_path):
    run = run_train(
        tmp_path, "run_id=learn", "data.toy.num_train=640", "data.batch_size=32", "stages=null", "model.stage=2",
        "trainer.max_epochs=8",
    )  # fmt: skip
    results_path = tmp_path / "runs" / "toy" / "learn" / "results.json"
    assert run.stdout.strip().splitlines()[-1] == f"results: {results_path}"  # the path is printed last
    result = json.loads(results_path.read_text())["toy"]
    gallery = result["counts"]["gallery"]
    chance = 100.0 / gallery
    assert gallery == 40
    assert result["metrics"]["R@1"] > 3 * chance, result["metrics"]
    assert (tmp_path / "runs" / "toy" / "learn" / "checkpoints" / "final.ckpt").is_file()
