"""A real (short) toy run of train.py states its schedule before building anything, follows it, and
writes X-Aligner's branch figures for every step into logs/metrics.csv (about 10 s)."""

from __future__ import annotations

import csv

import pytest

from helpers_training import run_train

BRANCHES = ("visual", "caption", "text", "self", "ffn")


def test_schedule_first_then_lr_and_branch_figures_in_metrics_csv(tmp_path):
    steps, warmup, lr = 10, 2, 1e-3  # warmup_fraction 0.2 of 10 steps; lr: conf/experiment/toy.yaml
    run_train(tmp_path, "run_id=logs", "stages=null", "model.stage=1", f"trainer.max_steps={steps}", "optim.warmup_fraction=0.2",
              "trainer.log_every_n_steps=1", "test_after_training=false", "data.val=null")  # fmt: skip
    run_dir = tmp_path / "runs" / "toy" / "logs"
    log = (run_dir / "train.log").read_text().splitlines()
    planned = next(i for i, line in enumerate(log) if "stage 1 schedule:" in line)
    built = next(i for i, line in enumerate(log) if "trainable parameters" in line)
    assert planned < built  # stated (and checked) before the model exists
    assert f"{steps} optimiser steps, warm-up {warmup} steps (20.0%)" in log[planned] and "peak lr: X-Aligner 0.001" in log[planned]
    started = "\n".join(line for line in log if "covr.training.module" in line and "schedule:" in line)
    assert f"{steps} optimiser steps, warm-up {warmup} steps" in started
    assert "head/decay: peak lr 0.001" in (run_dir / "train.log").read_text()

    rows = {int(r["step"]): r for r in csv.DictReader(open(run_dir / "logs" / "metrics.csv")) if r.get("xaligner/shift")}
    assert sorted(rows) == list(range(steps))
    for step, row in rows.items():  # transformers' warm-up: lr x step / warmup, so step 0 runs at lr 0
        expected = lr * step / warmup if step < warmup else None
        if expected is not None:
            assert float(row["lr/head/decay"]) == pytest.approx(expected, abs=1e-9)
    assert float(rows[warmup]["lr/head/decay"]) == pytest.approx(lr)
    shift = [float(rows[s]["xaligner/shift"]) for s in range(steps)]
    assert shift[0] == 0.0 and shift[1] == 0.0  # untrained, then after a step at lr 0: still the CoVR-2 query
    assert 0 < shift[2] < shift[-1]  # the branches open and keep opening
    last = rows[steps - 1]
    assert all(float(last[f"xaligner/update/b{b}.{n}"]) > 0 for b in (0, 1) for n in BRANCHES)
    # the default tanh gates: 0 until the first step with a learning rate, then open at gate_lr_scale x lr
    assert all(float(rows[0][f"xaligner/gate/b{b}.{n}"]) == 0.0 and float(last[f"xaligner/gate/b{b}.{n}"]) != 0.0 for b in (0, 1) for n in BRANCHES)
    assert float(rows[warmup]["lr/head/gate"]) == pytest.approx(100 * lr)  # conf/optim/adamw.yaml gate_lr_scale
