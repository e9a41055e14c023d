"""Time to rebuild a retriever from a covr checkpoint (test.py, covr.load, stage-2 init), with and
without skipping the random initialisation that the load overwrites.

    python tools/benchmark_load.py [--vision-layers 39] [--repeats 2]

The architecture is conf/model/backbone/blip2_vitg.yaml's (EVA ViT-g/14 + Q-Former) with
--vision-layers ViT blocks (39 = the real model, ~1.2 B parameters, ~14 GB of RAM for this
script); weights are random, the checkpoint is built in memory (disk reads are not timed).
  full init: build the retriever normally (random init), then load the checkpoint (covr before)
  covr:      covr.models.build.retriever_from_checkpoint (modules built without init, then loaded)
Both must give identical weights; the script checks it.
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from covr.data.toy import toy_vocabulary  # noqa: E402
from covr.tools import HelpFormatter  # noqa: E402
from covr.models.build import build_retriever, load_covr_weights, retriever_from_checkpoint  # noqa: E402
from covr.models.covr_checkpoint import STATE_PREFIX, checkpoint_build_config, checkpoint_payload, checkpoint_state  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--vision-layers", type=int, default=12, help="ViT blocks (39 = BLIP-2 ViT-g as LAVIS runs it)")
    parser.add_argument("--image-size", type=int, default=224, help="ViT input size")
    parser.add_argument("--repeats", type=int, default=2, help="best of")
    args = parser.parse_args(argv)

    backbone = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "backbone" / "blip2_vitg.yaml").spec)
    backbone["vision_config"]["num_hidden_layers"] = args.vision_layers
    backbone["vision_config"]["image_size"] = args.image_size
    cfg = {"backbone": {"family": "blip2", "weights": None, "spec": backbone, "tokenizer": toy_vocabulary()}, "stage": 2}
    source = build_retriever(copy.deepcopy(cfg))
    params = sum(p.numel() for p in source.parameters())
    obj = {"covr": checkpoint_payload(source, cfg), "state_dict": {STATE_PREFIX + k: v for k, v in source.state_dict().items()}}
    del source
    gc.collect()
    print(f"retriever: {params / 1e6:,.0f} M parameters ({args.vision_layers} ViT-g blocks), {torch.get_num_threads()} threads")

    def full_init():
        model = build_retriever(checkpoint_build_config(obj, "benchmark"))
        load_covr_weights(model, checkpoint_state(obj, "benchmark"), "benchmark")
        return model

    times = {"full init + load": [], "covr (init skipped) + load": []}
    for repeat in range(args.repeats):
        print(f"timing run {repeat + 1}/{args.repeats} (both loaders)", file=sys.stderr, flush=True)
        for name, fn in (("full init + load", full_init), ("covr (init skipped) + load", lambda: retriever_from_checkpoint(obj, "benchmark"))):
            gc.collect()
            start = time.perf_counter()
            model = fn()
            times[name].append(time.perf_counter() - start)
            state = model.state_dict()
            for key, value in obj["state_dict"].items():
                if not torch.equal(state[key[len(STATE_PREFIX):]], value):
                    raise SystemExit(f"{name}: {key} differs from the checkpoint")
            del model, state
    base = min(times["full init + load"])
    for name, values in times.items():
        print(f"{name:28s} {min(values):7.2f} s   {base / min(values):5.1f}x")
    print("identical weights after both: checked")


if __name__ == "__main__":
    main()
