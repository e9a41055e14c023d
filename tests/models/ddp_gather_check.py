"""Run by test_distributed_loss.py in its own subprocess: 2 gloo processes vs 1 process.

Each rank encodes its part of a global batch with a tiny stage-2 retriever, computes the loss on
the gathered batch, backpropagates and averages gradients over ranks (what DDP does). Rank 0 and
a separate single-process run over the whole batch save loss and gradients to OUT_DIR. The ranks
hold 4 + 4 rows (ddp.pt) and 5 + 3 rows (ddp_unequal.pt: a rank that lost samples); the *_reduce_scatter.pt
runs take the gather's NCCL backward (reduce-scatter) on gloo.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import open_xaligner, tiny_model_config  # noqa: E402

from covr.losses import ContrastiveLoss, contrastive  # noqa: E402
from covr.models import build_retriever  # noqa: E402

EDITS = ["make it red", "move it to the left", "change the background to white", "replace the circle with a square",
         "make it blue", "turn it green", "move it up", "make the square bigger"]
CAPTIONS = ["a blue circle", "", "a square on a black background", "a man with a dog", "", "a red square", "a circle", ""]
TARGET_CAPTIONS = ["a red circle", "a dog on the left", "a white background", "a square", "a blue video", "a green circle",
                   "a circle up", "a bigger square"]


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 2, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)


def loss_and_grads(model, rows):
    ref, tgt = batch()
    model.zero_grad(set_to_none=True)
    q = model.encode_query(ref[rows], [EDITS[i] for i in rows], [CAPTIONS[i] for i in rows])
    out = ContrastiveLoss(alpha=1.0, beta=0.5, caption_weight=0.5, video_weight=0.5)(
        q, model.encode_target(tgt[rows]), model.encode_text([TARGET_CAPTIONS[i] for i in rows])
    )
    out["loss"].backward()
    return out["loss"].detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def build():
    model = build_retriever(tiny_model_config(stage=2)).eval()  # eval: no dropout, so runs compare exactly
    return open_xaligner(model)  # every X-Aligner weight on the gradient path


SPLITS = {"ddp.pt": (0, 4, 8), "ddp_unequal.pt": (0, 5, 8)}  # rank r holds rows [bounds[r], bounds[r + 1])
# the same with the gather's backward by reduce-scatter (NCCL's path; gloo has it in recent torch)
SPLITS_REDUCE_SCATTER = {"ddp_reduce_scatter.pt": (0, 4, 8), "ddp_unequal_reduce_scatter.pt": (0, 5, 8)}


def worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = build()
    runs = dict(SPLITS)
    if hasattr(dist, "reduce_scatter_single"):
        runs.update(SPLITS_REDUCE_SCATTER)
    backends = contrastive.REDUCE_SCATTER_BACKENDS
    for name, bounds in runs.items():
        contrastive.REDUCE_SCATTER_BACKENDS = backends | {"gloo"} if name in SPLITS_REDUCE_SCATTER else backends
        loss, grads = loss_and_grads(model, list(range(bounds[rank], bounds[rank + 1])))
        for g in grads.values():  # DDP's gradient averaging
            dist.all_reduce(g)
            g /= world
        losses = [torch.zeros(()) for _ in range(world)]
        dist.all_gather(losses, loss)
        if rank == 0:
            torch.save({"loss": loss, "rank_losses": torch.stack(losses), "grads": grads}, Path(out_dir) / name)
    dist.destroy_process_group()


def main(out_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, out_dir), nprocs=2, join=True)
    loss, grads = loss_and_grads(build(), list(range(8)))
    torch.save({"loss": loss, "grads": grads}, Path(out_dir) / "single.pt")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1])
