"""Run by test_memory_bank_ddp.py in its own subprocess: the memory bank under 2 gloo processes vs 1.

Three training steps of a linear query encoder under ContrastiveLoss with a memory bank (size 10,
entropy weighting, HN-NCE beta 0.5). Each rank holds its part of every global batch (4 + 4 rows, and
5 + 3 in a second run); gradients are averaged over ranks (what DDP does) before an SGD step. Some
target ids repeat across steps, so duplicates of the current batch are left out of the bank's
negatives. Rank 0 and a single process holding every global batch save, per step, the loss, the
bank (embeddings, ids, fill count, next slot) and the encoder's gradient to OUT_DIR.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from covr.losses import ContrastiveLoss  # noqa: E402

STEPS = 3
TARGET_IDS = [[f"v{i}" for i in ids] for ids in ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 2, 10, 11, 5, 12, 13], [14, 0, 15, 16, 9, 17, 18, 19])]
SPLITS = {"ddp.pt": (0, 4, 8), "ddp_unequal.pt": (0, 5, 8)}  # rank r holds rows [bounds[r], bounds[r + 1])


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(8, 6, generator=g), torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=-1)


def train(rows_of_step) -> dict:
    """Three steps; rows_of_step(step) -> the global-batch rows this process holds."""
    torch.manual_seed(0)
    encoder = torch.nn.Linear(6, 4)
    loss_fn = ContrastiveLoss(alpha=1.0, beta=0.5, tau=0.1, memory_bank={"size": 10, "entropy_weighting": True}, embed_dim=4).train()
    world = dist.get_world_size() if dist.is_initialized() else 1
    record = {"loss": [], "embeddings": [], "ids": [], "filled": [], "next": [], "grad": []}
    for step in range(STEPS):
        rows = rows_of_step(step)
        x, target = data(step)
        encoder.zero_grad()
        query = torch.nn.functional.normalize(encoder(x[rows]), dim=-1)
        out = loss_fn(query, target[rows], target_ids=[TARGET_IDS[step][r] for r in rows], reference_ids=["r"] * len(rows))
        out["loss"].backward()
        for p in encoder.parameters():
            if world > 1:
                dist.all_reduce(p.grad)
                p.grad /= world
        record["grad"].append(encoder.weight.grad.clone())
        with torch.no_grad():
            for p in encoder.parameters():
                p -= 0.5 * p.grad
        record["loss"].append(out["loss"].detach())
        for key in ("embeddings", "ids", "filled", "next"):
            record[key].append(getattr(loss_fn.bank, key).clone())
    return record


def worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    for name, bounds in SPLITS.items():
        record = train(lambda step: list(range(bounds[rank], bounds[rank + 1])))
        if rank == 0:
            torch.save(record, Path(out_dir) / name)
    dist.destroy_process_group()


def main(out_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, out_dir), nprocs=2, join=True)
    torch.save(train(lambda step: list(range(8))), Path(out_dir) / "single.pt")


if __name__ == "__main__":
    main(sys.argv[1])
