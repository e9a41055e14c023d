"""Train covr models: `python train.py experiment=toy` (see README, "Training"; `--help` for usage)."""

import hydra
from omegaconf import DictConfig

from covr.training.config import run_script  # importing it registers the config resolvers


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from covr.training.cli import entry_point

    with entry_point(cfg, HydraConfig.get().runtime.output_dir):
        from covr.training.run import train

        train(cfg)


if __name__ == "__main__":
    run_script(main)
