"""Every experiment composes and instantiates (shrunk to the tiny model and toy data) and trains one
step; wrong keys and values fail with a clear message before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

import covr.training.config  # noqa: F401  (resolvers)
from covr.data.toy import generate_toy_dataset
from covr.models import checkpoint_payload
from covr.training.config import plain
from covr.training.run import _stage_configs
from covr.training.validate import ConfigValueError, validate_config
from helpers_training import REPO

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_dataset(root, num_train=64, num_val=8, num_test=8, num_frames=4, image_size=32)
    return root


def _compose(tmp: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.root={tmp}", f"paths.run_dir={tmp}/run", *overrides])


def _shrunk(toy: Path, tmp: Path, experiment: str, *extra: str):
    data = [
        f"data.train.csv={toy}/toy-covr_train.csv", f"data.train.video_root={toy}/videos",
        f"data.val.csv={toy}/toy-covr_val.csv", f"data.val.video_root={toy}/videos",
        "data.target_source=frames", "data.num_target_frames=2", "data.batch_size=8", "data.val_batch_size=8",
        "data.num_workers=0", "data.augment.scale=[1.0,1.0]",
    ]  # fmt: skip
    backbone = "blip_tiny" if "blip" in experiment.split("_") else "blip2_tiny"  # each family's own tiny backbone
    return _compose(tmp, f"experiment={experiment}", f"model/backbone={backbone}", "trainer=cpu", "logger=csv", *data, *extra)


def test_every_experiment_is_tested():
    assert set(EXPERIMENTS) == {
        "toy", "covr2_blip2", "xaligner_blip2_stage1", "xaligner_blip2_stage2", "covr_blip", "xaligner_blip_stage1", "xaligner_blip_stage2",
    }  # fmt: skip


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_instantiates_and_trains_a_step(experiment, toy, tmp_path):
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from covr.training.datamodule import CoVRDataModule
    from covr.training.module import CoVRModule

    extra = ["model.xaligner.num_heads=4"] if not experiment.startswith("covr") else []
    if experiment.endswith("_stage2"):
        stage1 = _shrunk(toy, tmp_path, experiment.replace("_stage2", "_stage1"), *extra)
        module = CoVRModule(plain(stage1.model), plain(stage1.loss), plain(stage1.optim))
        ckpt = tmp_path / "stage1.ckpt"
        torch.save({"covr": checkpoint_payload(module.model, plain(stage1.model)), "state_dict": module.state_dict()}, ckpt)
        extra.append(f"model.init_from={ckpt}")
    cfg = _shrunk(toy, tmp_path, experiment, *extra)
    validate_config(cfg)
    for stage_cfg in _stage_configs(cfg):
        module = CoVRModule(plain(stage_cfg.model), plain(stage_cfg.loss), plain(stage_cfg.optim))
        assert module.model.stage == stage_cfg.model.stage
        datamodule = CoVRDataModule(plain(stage_cfg.data), module.model.image_size, report_dir=tmp_path)
        loggers = [instantiate(c, save_dir=str(tmp_path)) for c in stage_cfg.logger.values()]
        trainer = pl.Trainer(**{**plain(stage_cfg.trainer), "accelerator": "cpu", "precision": "32-true"}, fast_dev_run=1,
                             logger=loggers, default_root_dir=str(tmp_path), use_distributed_sampler=False)  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        assert trainer.global_step == 1


def test_stage2_requires_its_stage1_checkpoint(tmp_path):
    cfg = _compose(tmp_path, "experiment=xaligner_blip2_stage2")
    with pytest.raises(Exception, match="missing a required value: model.init_from=<the stage-1 run>"):
        plain(cfg.model)


def test_wrong_key_is_hydras_error(tmp_path):
    with pytest.raises(ConfigCompositionException, match="num_blockz"):
        _compose(tmp_path, "experiment=toy", "model.xaligner.num_blockz=3")
    with pytest.raises(ConfigCompositionException, match="no_such_data"):
        _compose(tmp_path, "data=no_such_data")


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.query_head=xaligner2", "model.query_head='xaligner2' is not allowed; choose one of xaligner, joint"),
        ("model.xaligner.visual_memory=pixels", "model.xaligner.visual_memory='pixels'"),
        ("data.batch_size=0", "data.batch_size=0 must be > 0"),
        ("stages.1.model.stage=3", "model.stage=3 is not allowed"),
    ],
)
def test_wrong_value_fails_in_one_line(tmp_path, override, message):
    cfg = _compose(tmp_path, "experiment=toy", override)
    with pytest.raises(ConfigValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate_config(cfg)


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.batch_size=abc", "data.batch_size='abc' is not an integer"),
        ("optim.lr=abc", "optim.lr='abc' is not a number"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc' is not an integer or null"),
        ("data.pin_memory=maybe", "data.pin_memory='maybe' is not true or false"),
        ("optim.betas=[0.9,x]", "optim.betas=[0.9, 'x'] is not a list of numbers or null"),
        ("model.xaligner.num_heads=1.5", "model.xaligner.num_heads=1.5 is not an integer"),
        ("stages.2.trainer.max_epochs=many", "trainer.max_epochs='many' is not an integer or null"),
    ],
)
def test_wrong_type_fails_in_one_line_before_anything_is_built(tmp_path, override, message):
    cfg = _compose(tmp_path, "experiment=toy", override)
    with pytest.raises(ConfigValueError) as err:
        validate_config(cfg)
    assert str(err.value) == message


def test_train_py_reports_a_wrong_type_in_one_line(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(REPO / "train.py"), "experiment=toy", "data.batch_size=abc", f"paths.root={tmp_path}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2 and run.stderr.strip() == "error: data.batch_size='abc' is not an integer", run.stderr[-2000:]
    assert not (tmp_path / "data").exists()  # nothing was prepared or built
    assert not list((tmp_path / "runs").rglob("*"))  # and Hydra's run folder went with the failed run


@pytest.mark.parametrize("slots, expected", [("null", 4), ("3", 3), ("0", None)])
def test_training_loader_uses_shared_slots_as_configured(toy, tmp_path, slots, expected):
    from covr.training.datamodule import CoVRDataModule

    cfg = _shrunk(toy, tmp_path, "covr2_blip2", "data.num_workers=2", "data.prefetch_factor=2", f"data.shared_slots={slots}")
    loader = CoVRDataModule(plain(cfg.data), 32).train_dataloader()
    assert (loader.slots.busy.shape[1] if loader.slots is not None else None) == expected
