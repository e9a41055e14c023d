"""Ablation: the training methods of related work as options of the same toy training, against
the HN-NCE baseline, with the same steps (README "Training methods").

    python tools/ablate_training_methods.py                     # 1 seed, ~11 min on 2 CPU cores; prints a Markdown table
    python tools/ablate_training_methods.py --seeds 1234 1 2    # the README's table (mean +- sd over seeds, ~27 min)
    python tools/ablate_training_methods.py --options hn_nce hug

What runs, all through covr.training.run.train (the real training path, `experiment=toy`):
  1. the toy job's stage 0 once (the backbone adapted on the toy data; plain InfoNCE whatever the option);
  2. per option and seed: the toy job's stage 1 (X-Aligner, 1 epoch) and stage 2 (X-Aligner + Q-Former
     text path, 14 epochs) from that backbone, with the option's overrides and no validation;
  3. the test split's R@1 / R@5 (150 queries, gallery of 150 videos, chance 0.67%) of the last
     checkpoint under the toy benchmark's protocol (`covr2`, mean similarity); for HUG also by the
     uncertainty-aware distance (`similarity=uncertainty`).
Time per step = mean wall time of a stage-2 training step (forward, backward, optimiser; the batch
already loaded), measured by a callback around every batch.

Options: `hn_nce` (the baseline: the toy job itself), `hug` (loss=hug), `recall` (loss=recall:
InfoNCE tau 0.02 + intra-group triplets, batches grouped by reference; no corrective triplets,
which need an MLLM), `memory_bank` (HN-NCE + a bank of 1,024 past targets, entropy-weighted).
Runs reuse finished stages in --out (delete it to start over)."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import covr.training.config  # noqa: E402,F401  (resolvers)
from covr.tools import HelpFormatter, mean_sd  # noqa: E402
from covr.training.run import test_checkpoint, train  # noqa: E402

OPTIONS = {  # name: config overrides
    "hn_nce": [],
    "hug": ["loss=hug"],
    "recall": ["loss=recall"],
    "memory_bank": ["loss.memory_bank.size=1024"],
}
LABELS = {
    "hn_nce": "HN-NCE (baseline: the toy job's loss, β 0.5, + caption term)",
    "hug": "HUG (`loss=hug`)",
    "recall": "ReCALL refinement (`loss=recall`, no corrective triplets)",
    "memory_bank": "memory bank (`loss.memory_bank.size=1024`)",
}


class StepTimer(pl.Callback):
    """Wall time of every training batch (the batch already loaded), written to `out` as JSON when training ends."""

    def __init__(self, out: str):
        self.out, self.times, self.start = Path(out), [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self.start)

    def on_train_end(self, trainer, pl_module) -> None:
        self.out.write_text(json.dumps({"steps": len(self.times), "seconds": self.times}))


def toy_config(run_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["experiment=toy", f"paths.run_dir={run_dir}", "trainer.enable_progress_bar=false", "test_after_training=false", *overrides])


def run_stage(run_dir: Path, index: int, init_from: Path, seed: int, overrides: list[str]) -> Path:
    """The toy job's stage `index` (1 or 2 of its list) from `init_from`, without validation."""
    final = run_dir / "checkpoints" / "final.ckpt"
    if final.is_file():
        return final
    cfg = toy_config(run_dir, f"seed={seed}", f"model.init_from={init_from}", "data.val=null", *overrides)
    cfg.stages = OmegaConf.create([cfg.stages[index]])
    cfg.callbacks = OmegaConf.create({"timer": {"_target_": "__main__.StepTimer", "out": str(run_dir / "step_times.json")}})
    train(cfg)
    return final


def test_recall(checkpoint: Path, out: Path, similarity: str | None = None) -> dict[str, float]:
    result = out / "results.json"
    if not result.is_file():
        cfg = toy_config(out, *([f"similarity={similarity}"] if similarity else []))
        test_checkpoint(cfg, checkpoint, out)
    metrics = json.loads(result.read_text())["toy"]["metrics"]
    return {"R1": float(metrics["R@1"]), "R5": float(metrics["R@5"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ablate_training_methods", help="run folders; finished stages are reused")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234], help="initialisation and data-order seeds of stages 1 and 2")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS), help="training methods to compare")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    start = time.time()

    base = args.out / "stage0"
    backbone = base / "checkpoints" / "final.ckpt"
    if not backbone.is_file():
        cfg0 = toy_config(base)
        cfg0.stages = OmegaConf.create([cfg0.stages[0]])  # the toy job's own stage 0
        train(cfg0)
    print(f"[{time.time() - start:.0f} s] stage 0 done", flush=True)

    rows = {}
    for option in args.options:
        results: dict[str, list[float]] = {}
        for seed in args.seeds:
            folder = args.out / option / f"seed{seed}"
            last1 = run_stage(folder / "stage1", 1, backbone, seed, OPTIONS[option])
            last2 = run_stage(folder / "stage2", 2, last1, seed, OPTIONS[option])
            figures = test_recall(last2, folder / "test")
            if option == "hug":
                figures.update({f"{k}_uncertainty": v for k, v in test_recall(last2, folder / "test_uncertainty", "uncertainty").items()})
            times = json.loads((folder / "stage2" / "step_times.json").read_text())["seconds"]
            figures["ms_per_step"] = 1000 * statistics.mean(times[1:])  # the first step also builds caches and kernels
            figures["steps"] = len(times)
            for key, value in figures.items():
                results.setdefault(key, []).append(value)
            print(f"[{time.time() - start:.0f} s] {option} seed {seed}: {figures}", flush=True)
        rows[option] = results

    (args.out / "ablation.json").write_text(json.dumps({"seeds": args.seeds, "rows": rows}, indent=1))
    print(f"\nseeds {args.seeds}; {time.time() - start:.0f} s in all\n")
    print("| training method | stage-2 steps | test R@1 | test R@5 | ms per step (stage 2) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {LABELS[name]} | {int(r['steps'][0])} | {mean_sd(r['R1'])} | {mean_sd(r['R5'])} | {mean_sd(r['ms_per_step'], 1)} |")
        if "R1_uncertainty" in r:
            print(f"| HUG, retrieved by the uncertainty distance (`similarity=uncertainty`) | | {mean_sd(r['R1_uncertainty'])} | {mean_sd(r['R5_uncertainty'])} | |")


if __name__ == "__main__":
    main()
