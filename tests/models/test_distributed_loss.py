"""Global-batch negatives: a 2-process gloo run equals one process with the concatenated batch.
The multi-process part runs in its own subprocess (ddp_gather_check.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch


def test_two_process_gather_equals_single_process(tmp_path):
    """Equal local batches (4 + 4) and unequal ones (5 + 3: a rank that lost samples) both give the
    loss and every gradient of one process holding all 8 rows, with the gather's backward by
    all_reduce (gloo's) and by reduce-scatter (NCCL's)."""
    script = Path(__file__).with_name("ddp_gather_check.py")
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    assert any(k.startswith("xaligner.") for k in single["grads"]) and any(k.startswith("backbone.qformer.") for k in single["grads"])
    names = ["ddp.pt", "ddp_unequal.pt"]
    if hasattr(torch.distributed, "reduce_scatter_single"):  # the backward NCCL runs, here on gloo
        names += ["ddp_reduce_scatter.pt", "ddp_unequal_reduce_scatter.pt"]
    for name in names:
        ddp = torch.load(tmp_path / name, weights_only=True)
        torch.testing.assert_close(ddp["rank_losses"], single["loss"].expand(2), atol=1e-5, rtol=0, msg=name)
        assert set(ddp["grads"]) == set(single["grads"])
        for param, grad in single["grads"].items():
            torch.testing.assert_close(ddp["grads"][param], grad, atol=1e-5, rtol=0, msg=f"{name}: {param}")
