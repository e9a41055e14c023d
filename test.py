"""Evaluate a covr checkpoint: `python test.py checkpoint=PATH benchmark=[webvid_covr,cirr]` (see README, "Evaluation"; `--help` for usage)."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from covr.training.config import run_script  # importing it registers the config resolvers


@hydra.main(version_base="1.3", config_path="conf", config_name="test")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from covr.training.cli import entry_point

    run_dir = HydraConfig.get().runtime.output_dir
    with entry_point(cfg, run_dir):
        from covr.training.run import test_checkpoint

        test_checkpoint(cfg, cfg.checkpoint, Path(run_dir))


if __name__ == "__main__":
    run_script(main)
