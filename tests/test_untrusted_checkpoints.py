"""No code runs from a checkpoint file: a file whose unpickling would run code (a `__reduce__`
payload) is refused on every path that reads checkpoints, and the payload never runs; files
that need more than weights load only after an explicit opt-in."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import covr
import covr.training.config  # noqa: F401  (resolvers)
from conftest import tiny_model_config
from covr.data.toy import generate_toy_dataset
from covr.models import build_retriever, checkpoint_payload
from covr.models.checkpoint_io import TRUST_ENV, UntrustedCheckpointError, read_checkpoint

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this calls os.makedirs(marker): what an attacker's file would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _covr_checkpoint(extra: dict) -> dict:
    cfg = tiny_model_config()
    model = build_retriever(cfg)
    return {"covr": checkpoint_payload(model, cfg), "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, **extra}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("untrusted")
    marker = root / "payload_ran"
    evil = _covr_checkpoint({"hyper_parameters": _Payload(marker)})
    paths = {"marker": marker, "root": root}
    for name, obj in {"evil.ckpt": evil, "evil_lavis.pth": {"model": {"Qformer.bert.x": torch.ones(1)}, "config": _Payload(marker)}}.items():
        torch.save(obj, root / name)
        paths[name] = root / name
    torch.save(_covr_checkpoint({"extra": datetime.date(2026, 12, 1)}), root / "date.ckpt")  # harmless, but not weights-only
    paths["date.ckpt"] = root / "date.ckpt"
    torch.save(_covr_checkpoint({"hyper_parameters": OmegaConf.create({"model": {"stage": 1}})}), root / "omegaconf.ckpt")
    paths["omegaconf.ckpt"] = root / "omegaconf.ckpt"
    generate_toy_dataset(root / "toy", num_train=16, num_val=4, num_test=4, num_frames=4, image_size=32)
    return paths


def _refused(err: BaseException | str, path: Path) -> bool:
    text = str(err)
    return str(path) in text and "trust_checkpoint=true" in text and "os.makedirs" in text


def test_covr_load_refuses_a_payload_file(files):
    for name in ("evil.ckpt", "evil_lavis.pth"):
        with pytest.raises(UntrustedCheckpointError) as err:
            covr.load(files[name])
        assert _refused(err.value, files[name])
    assert not files["marker"].exists()


def test_tools_refuse_a_payload_file(files, capsys):
    from covr.tools.convert_checkpoint import main as convert

    assert convert([str(files["evil.ckpt"]), str(files["root"] / "converted")]) == 2
    assert _refused(capsys.readouterr().err, files["evil.ckpt"])
    from covr.tools.extract_embeddings import main as extract

    images = files["root"] / "toy" / "videos"
    assert extract(["--folder", str(images), "--checkpoint", str(files["evil.ckpt"]), "--out", str(files["root"] / "store"), "--device", "cpu"]) == 2
    assert _refused(capsys.readouterr().err, files["evil.ckpt"])
    assert not files["marker"].exists()


def _train_config(root: Path, *overrides: str):
    toy = root / "toy"
    data = [f"data.train.csv={toy}/toy-covr_train.csv", f"data.train.video_root={toy}/videos", "data.val=null", "data.toy=null",
            "data.target_source=frames", "data.num_target_frames=2", "data.batch_size=4", "data.num_workers=0"]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["experiment=toy", "stages=null", "model.stage=1", f"paths.root={root}",
                                           f"paths.run_dir={root}/run_{len(overrides)}_{abs(hash(overrides))}", "trainer.max_steps=1",
                                           "test_after_training=false", *data, *overrides])  # fmt: skip


@pytest.mark.parametrize("key", ["model.init_from", "model.backbone.weights", "resume"])
def test_training_refuses_a_payload_file(files, key):
    from covr.training.run import train

    evil = files["evil_lavis.pth"] if key == "model.backbone.weights" else files["evil.ckpt"]
    with pytest.raises(UntrustedCheckpointError) as err:
        train(_train_config(files["root"], f"{key}={evil}"))
    assert _refused(err.value, evil)
    assert not files["marker"].exists()


def test_test_py_refuses_a_payload_file_in_one_line(files):
    run = subprocess.run([sys.executable, str(REPO / "test.py"), f"checkpoint={files['evil.ckpt']}", "benchmark=toy",
                          f"paths.root={files['root']}", f"hydra.run.dir={files['root']}/test_run"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]
    assert _refused(run.stderr, files["evil.ckpt"]) and "Traceback" not in run.stderr
    assert not files["marker"].exists()


def test_weights_only_allows_configs_and_the_opt_in_allows_the_rest(files, monkeypatch):
    assert read_checkpoint(files["omegaconf.ckpt"])["hyper_parameters"]["model"]["stage"] == 1  # allow-listed OmegaConf
    with pytest.raises(UntrustedCheckpointError, match="datetime.date"):
        covr.load(files["date.ckpt"])
    assert covr.load(files["date.ckpt"], trust_checkpoint=True).model.stage == 1
    monkeypatch.setenv(TRUST_ENV, "1")
    assert read_checkpoint(files["date.ckpt"])["extra"] == datetime.date(2026, 12, 1)


def test_random_bytes_are_a_corrupt_file_not_a_trust_question(tmp_path):
    path = tmp_path / "noise.ckpt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(Exception, match="not a readable torch file") as err:
        read_checkpoint(path)
    assert not isinstance(err.value, UntrustedCheckpointError)
