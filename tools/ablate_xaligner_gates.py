"""Ablation: how X-Aligner's residual branches should start so that they open at the recipe's
scale, on the toy data with the real experiments' optimiser settings.

    python tools/ablate_xaligner_gates.py                  # 2 seeds, ~15 min on 2 CPU cores; prints a Markdown table
    python tools/ablate_xaligner_gates.py --seeds 1234 1 2 # the README's table
    python tools/ablate_xaligner_gates.py --seeds 1234 --variants output gate

What runs, all through covr.training.run.train (the real training path):
  1. the toy job's stage 0 once (the backbone adapted on the toy data, `experiment=toy`);
  2. per variant and seed: stage 1 then stage 2 from that backbone, each with the optimiser settings
     of `xaligner_blip2_stage1` / `xaligner_blip2_stage2` (lr, text-encoder lr, betas, eps, weight
     decay, warm-up fraction, cosine) and as many steps as those experiments take at 8 GPUs x 256 on
     WebVid-CoVR (--recipe-targets unique targets per epoch): the recipe's step counts on toy data;
  3. the CoVR-2 baseline row: `covr2_blip2`'s settings and step count from the same backbone.
The test split's R@1 (gallery of 150 videos, chance 0.67%) is measured after each stage on its
last checkpoint; the branch figures are the last step's values in logs/metrics.csv: `shift` = mean
token norm of (aligner output - aligner input) / mean token norm of the input, `update` = the same
for each residual update, averaged over branches, `|gate|` = mean tanh(g).

Variants: `gate` (tanh(g), g = 0, Flamingo; the gates at the learning rate), `gate_x10` /
`gate_x100` (the gates at 10x / 100x the learning rate; x100 is the default), `output`
(zero-initialised last layer of every branch, no gates).
Runs reuse finished stages in --out (delete it to start over)."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import covr.training.config  # noqa: E402,F401  (resolvers)
from covr.training.config import plain  # noqa: E402
from covr.training.run import test_checkpoint, train  # noqa: E402
from covr.tools import HelpFormatter, mean_sd  # noqa: E402

VARIANTS = {  # name: config overrides
    "output": ["model.xaligner.residual=output"],
    "gate": ["model.xaligner.residual=gate", "optim.gate_lr_scale=1"],
    "gate_x10": ["model.xaligner.residual=gate", "optim.gate_lr_scale=10"],
    "gate_x100": ["model.xaligner.residual=gate", "optim.gate_lr_scale=100"],
}
OPTIM_KEYS = ("lr", "text_encoder_lr", "betas", "eps", "weight_decay", "warmup_fraction", "warmup_steps", "min_lr_ratio")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def recipe_stage(experiment: str, targets: int, gpus: int) -> tuple[dict, int]:
    """(optimiser settings, optimiser steps) of a real experiment at `gpus` GPUs on `targets` items per epoch."""
    cfg = _compose(f"experiment={experiment}", "model.init_from=unused")
    optim = {k: v for k, v in plain(cfg.optim).items() if k in OPTIM_KEYS}
    steps = int(cfg.trainer.max_epochs) * (targets // gpus // int(cfg.data.batch_size))
    return optim, steps


def toy_config(run_dir: Path, *overrides: str):
    return _compose("experiment=toy", f"paths.run_dir={run_dir}", "trainer.enable_progress_bar=false", "test_after_training=false", *overrides)


def run_stage(run_dir: Path, stage: int, init_from: Path, optim: dict, steps: int, seed: int, overrides: list[str]) -> Path:
    """One stage of `steps` steps from `init_from`, no validation (the last step is the result)."""
    cfg = toy_config(run_dir, f"seed={seed}", f"model.init_from={init_from}", "data.val=null", "trainer.log_every_n_steps=1", *overrides)
    cfg.stages = [{"model": {"stage": stage}, "optim": optim, "trainer": {"max_steps": steps, "max_epochs": 10_000}}]
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


def test_r1(checkpoint: Path, out: Path) -> float:
    cfg = toy_config(out)
    result = out / "results.json"
    if not result.is_file():
        test_checkpoint(cfg, checkpoint, out)
    return float(json.loads(result.read_text())["toy"]["metrics"]["R@1"])


def branch_figures(run_dir: Path) -> dict[str, float]:
    """shift, mean update over branches and mean |gate| at the last logged step of a stage."""
    rows = [r for r in csv.DictReader(open(run_dir / "logs" / "metrics.csv")) if r.get("xaligner/shift")]
    if not rows:
        return {}
    last = rows[-1]
    updates = [float(v) for k, v in last.items() if k.startswith("xaligner/update/") and v]
    gates = [abs(float(v)) for k, v in last.items() if k.startswith("xaligner/gate/") and v]
    out = {"shift": float(last["xaligner/shift"]), "update": statistics.mean(updates)}
    if gates:
        out["gate"] = statistics.mean(gates)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ablate_xaligner_gates", help="run folders; finished stages are reused")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234, 1], help="X-Aligner initialisation and data-order seeds")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="residual variants to train")
    parser.add_argument("--recipe-targets", type=int, default=131_000, help="unique targets per epoch (WebVid-CoVR train)")
    parser.add_argument("--recipe-gpus", type=int, default=8, help="GPUs of the recipe whose step counts are reproduced")
    parser.add_argument("--no-baseline", action="store_true", help="skip the CoVR-2 (no X-Aligner) row")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    progress = logging.getLogger("covr.training.progress")  # a line every 30 s of each training (stage, step, loss, ETA)
    progress.setLevel(logging.INFO)
    progress.addHandler(logging.StreamHandler(sys.stdout))
    start = time.time()

    stage1, steps1 = recipe_stage("xaligner_blip2_stage1", args.recipe_targets, args.recipe_gpus)
    stage2, steps2 = recipe_stage("xaligner_blip2_stage2", args.recipe_targets, args.recipe_gpus)
    covr2, steps_covr2 = recipe_stage("covr2_blip2", args.recipe_targets, args.recipe_gpus)
    print(f"recipe at {args.recipe_gpus} GPUs, {args.recipe_targets:,} targets/epoch: stage 1 {steps1} steps {stage1}; "
          f"stage 2 {steps2} steps {stage2}; CoVR-2 {steps_covr2} steps {covr2}", flush=True)  # fmt: skip

    base = args.out / "stage0"
    cfg0 = toy_config(base)
    cfg0.stages = OmegaConf.create([cfg0.stages[0]])  # the toy job's own stage 0
    train(cfg0)
    backbone = base / "checkpoints" / "final.ckpt"
    r1_init = test_r1(backbone, args.out / "stage0_test")
    print(f"[{time.time() - start:.0f} s] stage 0 done; untrained X-Aligner (= CoVR-2 query) test R@1 {r1_init:.2f}", flush=True)

    rows = []
    for variant in args.variants:
        results: dict[str, list[float]] = {}
        for seed in args.seeds:
            folder = args.out / variant / f"seed{seed}"
            last1 = run_stage(folder / "stage1", 1, backbone, stage1, steps1, seed, VARIANTS[variant])
            last2 = run_stage(folder / "stage2", 2, last1, stage2, steps2, seed, VARIANTS[variant])
            figures = {"R1_stage1": test_r1(last1, folder / "test1"), "R1_stage2": test_r1(last2, folder / "test2")}
            figures.update({f"{k}_stage1": v for k, v in branch_figures(folder / "stage1").items()})
            figures.update({f"{k}_stage2": v for k, v in branch_figures(folder / "stage2").items()})
            for key, value in figures.items():
                results.setdefault(key, []).append(value)
            print(f"[{time.time() - start:.0f} s] {variant} seed {seed}: {figures}", flush=True)
        rows.append((variant, results))
    if not args.no_baseline:
        results = {}
        for seed in args.seeds:
            folder = args.out / "covr2" / f"seed{seed}"
            last = run_stage(folder / "stage2", 2, backbone, covr2, steps_covr2, seed, ["model/head=joint"])
            results.setdefault("R1_stage2", []).append(test_r1(last, folder / "test2"))
            print(f"[{time.time() - start:.0f} s] CoVR-2 baseline seed {seed}: R@1 {results['R1_stage2'][-1]:.2f}", flush=True)
        rows.append(("covr2 (no X-Aligner)", results))

    (args.out / "ablation.json").write_text(json.dumps({"r1_untrained": r1_init, "steps": [steps1, steps2, steps_covr2], "rows": dict(rows)}, indent=1))
    print(f"\nuntrained X-Aligner (= the CoVR-2 query after stage 0): test R@1 {r1_init:.2f}; seeds {args.seeds}; "
          f"{time.time() - start:.0f} s in all\n")  # fmt: skip
    print(f"| residual | R@1 after stage 1 ({steps1} steps) | shift | update | abs(gate) | R@1 after stage 2 (+{steps2}) | shift | update | abs(gate) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        cells = [mean_sd(r.get("R1_stage1", []))]
        cells += [mean_sd(r.get(f"{k}_stage1", []), 4) for k in ("shift", "update", "gate")]
        cells += [mean_sd(r.get("R1_stage2", []))]
        cells += [mean_sd(r.get(f"{k}_stage2", []), 4) for k in ("shift", "update", "gate")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
