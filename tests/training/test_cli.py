"""train.py / test.py for the person at the terminal: usage text first, mistakes in one or two lines
that say what to set, no empty run folders left behind, progress lines in a log file."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import covr.training.config  # noqa: F401  (resolvers)
from covr.training import preflight
from covr.training.cli import _remove_if_empty, entry_point
from covr.training.config import plain
from helpers_training import REPO, SMALL_TOY, env_for


def _run(tmp: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=tmp, env=env_for(tmp), capture_output=True, text=True, timeout=180)


def _compose(tmp: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.root={tmp}", f"paths.run_dir={tmp}/run", *overrides])


@pytest.mark.parametrize("script", ["train.py", "test.py"])
def test_help_starts_with_usage_and_points_at_the_readme(tmp_path, script):
    run = _run(tmp_path, script, "--help")
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"usage: python {script} ")
    head = "\n".join(lines[:12])
    assert "experiment=toy" in head and "README sections:" in head


@pytest.mark.parametrize("script", ["train.py", "test.py"])
def test_help_into_a_reader_that_stops_early_ends_without_a_traceback(tmp_path, script):
    # `python train.py --help | head -3`: here the reader is gone before the first byte, so every write fails
    proc = subprocess.Popen([sys.executable, str(REPO / script), "--help"], cwd=tmp_path, env=env_for(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=180) == 1 and stderr == "", stderr[-2000:]


def test_missing_data_names_the_key_and_the_variable_and_leaves_no_run_folder(tmp_path):
    run = _run(tmp_path, "train.py", "experiment=covr2_blip2", "model/backbone=blip2_tiny")
    data = tmp_path / "data"  # COVR_DATA (helpers_training.env_for), empty
    assert run.returncode == 2 and run.stderr.splitlines() == [
        f"error: data.train.csv: {data}/WebVid-CoVR/annotation/webvid2m-covr_train.csv does not exist",
        f"paths.data_dir is {data}: set COVR_DATA to the folder that holds the datasets (WebVid-CoVR/, WebVid/, CIRR/, ...), "
        "or pass the file's own key (README, \"Where things live\")",
    ], run.stderr[-3000:]
    assert not list((tmp_path / "runs").rglob("*"))  # Hydra's run folder (.hydra/, train.log) was removed


def test_missing_weights_name_covr_weights(tmp_path):
    for csv_name in ("webvid2m-covr_train.csv", "webvid8m-covr_val.csv", "webvid8m-covr_test.csv"):
        (tmp_path / "data" / "WebVid-CoVR" / "annotation").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "WebVid-CoVR" / "annotation" / csv_name).touch()
    for folder in ("2M", "8M"):
        (tmp_path / "data" / "WebVid" / folder / "train").mkdir(parents=True)
    cfg = _compose(tmp_path, "experiment=covr2_blip2", f"paths.data_dir={tmp_path}/data", f"paths.weights_dir={tmp_path}/weights")
    from covr.training.run import _stage_configs

    problem = preflight.missing_input(_stage_configs(cfg), cfg)
    assert problem == f"model.backbone.weights: {tmp_path}/weights/blip2_finetune_coco.pth does not exist"
    assert preflight.path_hints(problem, cfg)[0].startswith(f"paths.weights_dir is {tmp_path}/weights: set COVR_WEIGHTS to ")


def test_test_py_without_a_checkpoint_says_what_to_pass(tmp_path):
    run = _run(tmp_path, "test.py")
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1, run.stderr[-3000:]
    assert run.stderr.startswith("error: missing a required value: checkpoint=PATH: a covr checkpoint")
    assert not list((tmp_path / "runs").rglob("*"))


def test_a_required_value_is_one_line_not_a_traceback(tmp_path, capsys):
    cfg = _compose(tmp_path, "experiment=xaligner_blip2_stage2")
    with pytest.raises(SystemExit) as stop, entry_point(cfg):
        plain(cfg.model)  # resolves ${required:...}
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: missing a required value: model.init_from=<the stage-1 run>/checkpoints/final.ckpt\n"


def test_a_logger_without_its_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(preflight.LOGGER_PACKAGES, "TensorBoardLogger", (("covr_no_such_package",), "tensorboard"))
    cfg = _compose(tmp_path, "experiment=toy", "logger=csv_tensorboard")
    assert preflight.missing_package(cfg) == (
        "logger tensorboard needs the covr_no_such_package package, which is not installed: pip install -e '.[tensorboard]' (or logger=csv)"
    )
    assert preflight.missing_package(_compose(tmp_path, "experiment=toy")) is None  # csv needs nothing


def test_only_an_empty_run_folder_is_removed(tmp_path):
    cfg = _compose(tmp_path, f"paths.output_dir={tmp_path}/runs")
    empty, used = tmp_path / "runs" / "toy" / "a", tmp_path / "runs" / "toy" / "b"
    for folder in (empty, used):
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("x: 1\n")
        (folder / "train.log").write_text("log\n")
    (used / "stage0").mkdir()
    assert _remove_if_empty(empty, cfg) is True and not empty.exists()
    assert _remove_if_empty(used, cfg) is False and (used / "stage0").is_dir()
    (used / "stage0").rmdir()
    assert _remove_if_empty(used, cfg) is True
    assert not (tmp_path / "runs" / "toy").exists() and (tmp_path / "runs").is_dir()  # empty parents go, the output root stays


def test_progress_lines_reach_a_log_file(tmp_path):
    """No terminal (captured output): no bar, and a line per interval (here every step) with the
    stage, epoch, step / total, the loss the step logged, speed and ETA; the same lines in train.log."""
    args = ["experiment=toy", "data.num_workers=0", *SMALL_TOY, "run_id=p", "stages=null", "model.stage=1", "trainer.max_steps=5",
            "progress_every_s=1e-9", "trainer.log_every_n_steps=1", "test_after_training=false", "data.val=null"]  # fmt: skip
    run = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env_for(tmp_path), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = [line.split(" - ", 1)[1] for line in run.stdout.splitlines() if "[covr.training.progress]" in line]
    assert lines[0] == "stage 1: training 5 optimiser steps"
    assert lines[-1].startswith("stage 1: trained to step 5/5 in ")
    steps = lines[1:-1]
    assert [line.split(", step ")[1].split("/")[0] for line in steps] == ["1", "2", "3", "4", "5"]
    losses = {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(open(tmp_path / "runs" / "toy" / "p" / "logs" / "metrics.csv")) if r.get("train/loss")}
    for n, line in enumerate(steps, start=1):  # global_step is n after the n-th step, whose row is step n - 1
        assert line.startswith("stage 1: epoch 1/") and f"step {n}/5 ({20.0 * n:.1f}%), loss {losses[n - 1]:.4f} | " in line
    assert "steps/s, ETA " in steps[0]
    assert "Epoch 0:" not in run.stdout and "\r" not in run.stdout  # no progress bar in a file
    log = (tmp_path / "runs" / "toy" / "p" / "train.log").read_text()
    assert all(line in log for line in lines)
