"""Train covr models: `python train.py experiment=toy` (see README, "Training")."""

import hydra
from omegaconf import DictConfig

import covr.training.config  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from covr.training.run import errors_in_one_line, train

    with errors_in_one_line():
        train(cfg)


if __name__ == "__main__":
    main()
