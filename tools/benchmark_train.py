"""Training-step throughput, memory and model FLOPs utilisation, covr's settings against a plain baseline.

    python tools/benchmark_train.py                     # tiny BLIP-2 on CPU: a smoke run (seconds)
    python tools/benchmark_train.py --backbone blip2_vitg --image-size 224 --batch-size 64 --device cuda

One step is what covr.training.module runs for WebVid-CoVR: composed query from F reference frames
(F = --frames) and the edit text, targets from store embeddings [B, 15, E] (target_source: store),
the CoVR-2 caption term, HN-NCE over the batch (0.5 / 0.5), backward, AdamW step. For stage 1 (only
X-Aligner trains) and stage 2 (also the Q-Former text path), settings measured in the same run:

  baseline    fp32, eager attention in the backbone, no activation checkpointing, AdamW (foreach)
  covr        bf16 autocast, SDPA, fused AdamW on CUDA          (trainer=gpu / ddp)
  covr+ckpt   covr + activation checkpointing                   (model.gradient_checkpointing=true)

samples/s and step ms: median of --steps timed steps after --warmup. act MiB: tensors saved for
backward (activations, and under autocast the bf16 copies of trainable weights; every device).
peak MiB: torch.cuda.max_memory_allocated over the timed steps (CUDA only).
TFLOP/s: model FLOPs of one step (forward + backward of the baseline, torch.utils.flop_counter;
recomputation is not model work) / step time; MFU: that / the GPU's dense bf16 peak (--peak-tflops
or a table of common GPUs). x base: samples/s and memory (peak on CUDA, act elsewhere) / baseline.
Weights are random (weights: null): speed does not depend on them. X-Aligner always uses SDPA.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import covr.training.config  # noqa: E402,F401  (resolvers used by the model configs)
from covr.losses import ContrastiveLoss  # noqa: E402
from covr.models import build_retriever  # noqa: E402
from covr.tools import HelpFormatter  # noqa: E402
from covr.training.optim import make_optimizer, parameter_groups  # noqa: E402

SETTINGS = {  # name: (bf16 autocast, backbone attention, activation checkpointing, fused AdamW: None = on CUDA)
    "baseline": (False, "eager", False, False),
    "covr": (True, "sdpa", False, None),
    "covr+ckpt": (True, "sdpa", True, None),
}
PRESETS = {"blip2_tiny": ["model.xaligner.num_heads=4"]}  # the tiny width (64) needs fewer heads
PEAK_BF16_TFLOPS = {"H200": 989, "H100": 989, "GH200": 989, "B200": 2250, "A100": 312, "L40S": 362, "L4": 121,
                    "A10": 125, "A6000": 155, "4090": 165, "V100": 125}  # dense, no sparsity  # fmt: skip
MIB = 2**20


@dataclass
class Row:
    stage: int
    frames: int
    setting: str
    samples_per_s: float
    step_ms: float
    activation_mib: float
    peak_mib: float | None
    model_tflop_per_step: float
    tflops: float
    mfu: float | None


def model_config(backbone: str, image_size: int | None, overrides: list[str]) -> dict:
    """The composed retriever config (conf/model/blip2.yaml + backbone) with random weights and a
    synthetic vocabulary of the spec's size (no hub access)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    extra = PRESETS.get(backbone, []) + ["model.backbone.weights=null"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose(overrides=["+model=blip2", f"model/backbone={backbone}", *extra, *overrides])
    cfg.model.backbone.tokenizer = None  # replaced below; the configured one may need the hub
    model = OmegaConf.to_container(cfg.model, resolve=True)
    if image_size is not None:
        model["backbone"]["image_size"] = image_size
    model["backbone"]["tokenizer"] = synthetic_vocabulary(int(model["backbone"]["spec"]["qformer_config"]["vocab_size"]) - 1)
    model["backbone"]["vision_weights"] = None
    model["init_from"] = None
    return model


def synthetic_vocabulary(size: int) -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, size)]


def texts(batch: int, words: int, vocabulary: int, offset: int) -> list[str]:
    """Sentences of `words` distinct in-vocabulary words (one token each, + [CLS]/[SEP])."""
    return [" ".join(f"w{5 + (offset + 31 * i + 7 * j) % (vocabulary - 5)}" for j in range(words)) for i in range(batch)]


class Step:
    """One benchmark setting: model, optimiser, inputs and the training step."""

    def __init__(self, cfg: dict, setting: str, stage: int, frames: int, batch: int, device: torch.device):
        bf16, attn, checkpointing, fused = SETTINGS[setting]
        cfg = {**cfg, "stage": stage, "backbone": {**cfg["backbone"], "attn_implementation": attn}}
        torch.manual_seed(0)
        with torch.device(device):
            self.model = build_retriever(cfg).to(device).train()
        self.model.set_gradient_checkpointing(checkpointing)
        groups = parameter_groups(self.model, 1e-5, 0.05)
        self.optimizer = make_optimizer(groups, fused=fused)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        self.loss = ContrastiveLoss(video_weight=0.5, caption_weight=0.5)
        size, vocab = self.model.image_size, len(cfg["backbone"]["tokenizer"]) + 1
        g = torch.Generator().manual_seed(1)
        self.frames = torch.randn(batch, frames, 3, size, size, generator=g).to(device)
        embed_dim = self.model.backbone.embed_dim
        self.targets = torch.nn.functional.normalize(torch.randn(batch, 15, embed_dim, generator=g), dim=-1).to(device)
        self.edit, self.caption, self.target_caption = (texts(batch, n, vocab, o) for n, o in ((12, 0), (20, 1), (20, 2)))

    def forward_backward(self) -> None:
        with self.autocast:
            query = self.model.encode_query(self.frames, self.edit, self.caption)
            target = self.model.encode_target_embeddings(self.targets)
            caption = self.model.encode_text(self.target_caption)
            loss = self.loss(query, target, caption)["loss"]
        loss.backward()

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward_backward()
        self.optimizer.step()

    def activation_bytes(self) -> int:
        """Bytes of the distinct non-parameter tensors autograd saves during forward."""
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        self.optimizer.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.forward_backward()
        return sum(seen.values())

    def model_flops(self) -> int:
        self.optimizer.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as counter:
            self.forward_backward()
        return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def measure(step: Step, device: torch.device, warmup: int, steps: int, batch: int, flops: int, peak: float | None, setting: str,
            stage: int, frames: int) -> Row:  # fmt: skip
    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    peak_mib = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None
    seconds = statistics.median(times)
    tflops = flops / seconds / 1e12
    return Row(stage, frames, setting, batch / seconds, seconds * 1e3, step.activation_bytes() / MIB, peak_mib, flops / 1e12, tflops,
               tflops / peak if peak else None)  # fmt: skip


def run(args: argparse.Namespace, cfg: dict) -> list[Row]:
    device = torch.device(args.device)
    peak = peak_tflops(device, args.peak_tflops)
    rows = []
    total, start = len(args.stages) * len(args.frames) * len(args.settings), time.perf_counter()
    for stage in args.stages:
        for frames in args.frames:
            flops = 0
            for setting in args.settings:
                step = Step(cfg, setting, stage, frames, args.batch_size, device)
                if not flops:  # model FLOPs: the first setting's step (baseline: no recomputation)
                    flops = step.model_flops()
                rows.append(measure(step, device, args.warmup, args.steps, args.batch_size, flops, peak, setting, stage, frames))
                print(f"[{time.perf_counter() - start:.0f} s] row {len(rows)}/{total} measured: stage {stage}, {frames} frame(s), {setting}", file=sys.stderr, flush=True)
                del step
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def format_table(rows: list[Row]) -> str:
    head = f"{'stage':>5} {'frames':>6}  {'setting':<10} {'samples/s':>10} {'step ms':>9} {'act MiB':>9} {'peak MiB':>9} {'TFLOP/s':>8} {'MFU':>6} {'speed x':>8} {'mem x':>6}"
    lines = [head]
    base: dict[tuple[int, int], Row] = {}
    for r in rows:
        b = base.setdefault((r.stage, r.frames), r)
        mem, base_mem = (r.peak_mib, b.peak_mib) if r.peak_mib is not None else (r.activation_mib, b.activation_mib)
        peak = f"{r.peak_mib:9.0f}" if r.peak_mib is not None else f"{'-':>9}"
        mfu = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else f"{'-':>6}"
        lines.append(f"{r.stage:>5} {r.frames:>6}  {r.setting:<10} {r.samples_per_s:10.1f} {r.step_ms:9.1f} {r.activation_mib:9.1f} {peak} "
                     f"{r.tflops:8.2g} {mfu} {r.samples_per_s / b.samples_per_s:8.2f} {mem / base_mem if base_mem else 0:6.2f}")  # fmt: skip
    return "\n".join(lines)


def describe(args: argparse.Namespace, cfg: dict) -> str:
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    size = cfg["backbone"]["image_size"] or cfg["backbone"]["spec"]["vision_config"]["image_size"]
    return (f"{args.backbone}, {size} px, X-Aligner default head, batch {args.batch_size}, {where}, torch {torch.__version__}; "
            f"median of {args.steps} steps after {args.warmup} warm-up")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--backbone", default="blip2_tiny", help="conf/model/backbone/<name>.yaml (weights replaced by random init)")
    parser.add_argument("--image-size", type=int, default=None, help="frame size (default: the backbone config's)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step (per process)")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2], choices=[1, 2], help="training stages to measure")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 4], help="reference (query) frames")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), help="the first is the ratio's base")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda when available, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads); 1 gives stable CPU timings on a busy machine")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--override", action="append", default=[], help="Hydra override of the model config, e.g. model.xaligner.num_blocks=4")
    parser.add_argument("--json", help="also write the rows to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = model_config(args.backbone, args.image_size, args.override)
    setup = describe(args, cfg)
    print(setup, flush=True)
    rows = run(args, cfg)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": setup, "rows": [asdict(r) for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
