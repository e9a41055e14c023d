"""The memory bank under DDP: every rank's bank holds the gathered targets, so 2 gloo processes end
each step with exactly the bank, loss and gradients of one process holding the global batch
(also with unequal local batches). The multi-process part runs in its own subprocess
(ddp_bank_check.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from covr.losses import stable_ids


def test_two_process_bank_equals_single_process(tmp_path):
    script = Path(__file__).with_name("ddp_bank_check.py")
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    # three pushes of 8 into 10 slots: the newest 10 targets, step 3's 8 and step 2's last 2
    assert single["filled"][-1].item() == 10 and single["next"][-1].item() == 4
    slots = ["v9", "v17", "v18", "v19", "v12", "v13", "v14", "v0", "v15", "v16"]  # slot k after writes to 0-7, 8-9 + 0-5, 6-9 + 0-3
    assert single["ids"][-1].tolist() == stable_ids(slots).tolist()
    for name in ("ddp.pt", "ddp_unequal.pt"):
        ddp = torch.load(tmp_path / name, weights_only=True)
        for step in range(3):
            for key in ("ids", "filled", "next"):
                assert torch.equal(ddp[key][step], single[key][step]), f"{name} step {step}: {key}"
            torch.testing.assert_close(ddp["embeddings"][step], single["embeddings"][step], rtol=0, atol=1e-6, msg=f"{name} step {step}")
            torch.testing.assert_close(ddp["loss"][step], single["loss"][step], rtol=0, atol=1e-5, msg=f"{name} step {step}")
            torch.testing.assert_close(ddp["grad"][step], single["grad"][step], rtol=0, atol=1e-5, msg=f"{name} step {step}")
