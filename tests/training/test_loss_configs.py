"""Every loss option (conf/loss/) composes with the toy experiment, instantiates for every stage and
trains a step; each has the keys stage overrides set; a wrong value fails in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

import covr.training.config  # noqa: F401  (resolvers)
from covr.data.toy import generate_toy_dataset
from covr.losses import ContrastiveLoss, HUGLoss
from covr.training.config import plain
from covr.training.run import _stage_configs
from covr.training.validate import ConfigValueError, validate_config
from helpers_training import REPO

LOSSES = sorted(p.stem for p in (REPO / "conf" / "loss").glob("*.yaml"))
OPTIONS = {  # name: overrides
    "hn_nce": ["loss=hn_nce"],
    "hug": ["loss=hug"],
    "recall": ["loss=recall"],
    "memory_bank": ["loss=hn_nce", "loss.memory_bank.size=16"],
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_dataset(root, num_train=64, num_val=8, num_test=8, num_frames=4, image_size=32)
    return root


def _compose(tmp: Path, toy: Path, *overrides: str):
    data = [
        f"data.train.csv={toy}/toy-covr_train.csv", f"data.train.video_root={toy}/videos",
        f"data.val.csv={toy}/toy-covr_val.csv", f"data.val.video_root={toy}/videos",
        "data.target_source=frames", "data.num_target_frames=2", "data.batch_size=8", "data.val_batch_size=8", "data.num_workers=0",
        "data.caption_features=online",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.root={tmp}", f"paths.run_dir={tmp}/run", "experiment=toy", "model.xaligner.num_heads=4", *data, *overrides])


def test_every_loss_option_is_tested_and_has_the_common_keys():
    assert set(LOSSES) == {"hn_nce", "hug", "recall"}
    common = set(yaml.safe_load((REPO / "conf" / "loss" / "hn_nce.yaml").read_text()))
    for name in LOSSES:
        text = yaml.safe_load((REPO / "conf" / "loss" / f"{name}.yaml").read_text())
        keys = set(text["loss"] if "loss" in text and isinstance(text["loss"], dict) and "kind" in text["loss"] else text)
        assert keys == common, name  # a stage override (the toy's stage 0) may set any of them


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_loss_option_composes_instantiates_and_trains_a_step_in_every_stage(option, toy, tmp_path):
    import pytorch_lightning as pl

    from covr.training.datamodule import CoVRDataModule
    from covr.training.module import CoVRModule

    cfg = _compose(tmp_path, toy, *OPTIONS[option])
    validate_config(cfg)
    init_from = None
    for stage_cfg in _stage_configs(cfg):
        model_cfg = plain(stage_cfg.model) | ({"init_from": str(init_from)} if init_from else {})
        module = CoVRModule(model_cfg, plain(stage_cfg.loss), plain(stage_cfg.optim))
        stage = module.model.stage
        expected = HUGLoss if option == "hug" and stage > 0 else ContrastiveLoss
        assert isinstance(module.loss, expected), (option, stage)
        if option == "memory_bank":
            assert (module.loss.bank is not None) == (stage > 0)  # the toy's stage 0 is plain InfoNCE
        if option == "recall":
            assert module.loss.triplet_weight == (0.5 if stage > 0 else 0.0) and stage_cfg.data.sampler == ("grouped_by_reference" if stage > 0 else "random")
        assert (module.model.uncertainty is not None) == (option == "hug")
        datamodule = CoVRDataModule(plain(stage_cfg.data), module.model.image_size, report_dir=tmp_path)
        trainer = pl.Trainer(**{**plain(stage_cfg.trainer), "accelerator": "cpu", "precision": "32-true"}, fast_dev_run=1, logger=False,
                             default_root_dir=str(tmp_path), use_distributed_sampler=False)  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        assert trainer.global_step == 1
        init_from = tmp_path / f"stage{stage}.ckpt"
        trainer.save_checkpoint(init_from)


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.kind=triplet", "loss.kind='triplet' is not allowed; choose one of hn_nce, hug"),
        ("data.sampler=by_target", "data.sampler='by_target' is not allowed; choose one of random, grouped_by_reference"),
        ("data.group_size=0", "data.group_size=0 must be > 0"),
        ("loss.memory_bank.size=many", "loss.memory_bank.size='many' is not an integer"),
    ],
)
def test_wrong_loss_values_fail_in_one_line(tmp_path, toy, override, message):
    with pytest.raises(ConfigValueError, match=message):
        validate_config(_compose(tmp_path, toy, override))


def test_hug_heads_fail_in_one_line(tmp_path, toy):
    with pytest.raises(ConfigValueError, match="model.uncertainty.num_heads=0 must be > 0"):
        validate_config(_compose(tmp_path, toy, "loss=hug", "model.uncertainty.num_heads=0"))
