"""Evaluate a covr checkpoint: `python test.py checkpoint=PATH benchmark=[webvid_covr,cirr]` (see README, "Evaluation")."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

import covr.training.config  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="test")
def main(cfg: DictConfig) -> None:
    from covr.training.run import errors_in_one_line, test_checkpoint

    with errors_in_one_line():
        test_checkpoint(cfg, cfg.checkpoint, Path(cfg.paths.run_dir))


if __name__ == "__main__":
    main()
