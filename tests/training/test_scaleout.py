"""Scale-out configuration and preemption logic, in process and fast: trainer / launcher configs,
the Slurm-aware run id, the checkpoint to resume from, the requeue signal and its callback."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import covr.training.preemption as preemption
from covr.training.checkpointing import atomic_torch_save, find_resume_checkpoint
from covr.training.config import default_run_id, plain
from covr.training.preemption import EXIT_REQUEUED, CheckpointAndRequeue, Requeued, RequeueSignal
from helpers_training import REPO


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["experiment=toy", *overrides], return_hydra_config=hydra)


def test_trainer_configs(monkeypatch):
    for var in ("SLURM_JOB_NUM_NODES", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    ddp = plain(_compose("trainer=ddp").trainer)
    assert (ddp["accelerator"], ddp["devices"], ddp["strategy"], ddp["precision"]) == ("gpu", -1, "ddp", "bf16-mixed")
    cpu = plain(_compose("trainer=ddp_cpu").trainer)
    assert (cpu["accelerator"], cpu["devices"], cpu["strategy"], cpu["precision"]) == ("cpu", 2, "ddp", "32-true")
    single = plain(_compose("trainer=ddp_multinode").trainer)
    assert (single["num_nodes"], single["devices"]) == (1, -1)
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    multi = plain(_compose("trainer=ddp_multinode").trainer)
    assert (multi["num_nodes"], multi["devices"], multi["strategy"]) == (3, 4, "ddp")
    assert plain(_compose("trainer=ddp_multinode", "trainer.num_nodes=2").trainer)["num_nodes"] == 2


def test_slurm_launcher_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("COVR_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("COVR_SLURM_ACCOUNT", "proj42")
    monkeypatch.setenv("COVR_SLURM_GPUS_PER_NODE", "8")
    monkeypatch.delenv("COVR_SLURM_QOS", raising=False)
    launcher = _compose("hydra/launcher=slurm", "hydra.launcher.nodes=2", hydra=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.account, launcher.qos) == ("gpu", "proj42", None)
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 8, 8)  # one task per GPU
    assert launcher.timeout_min == 1440 and launcher.signal_delay_s == 120 and launcher.max_num_timeout > 0


def test_run_id_is_the_slurm_job_id_inside_slurm(monkeypatch):
    assert default_run_id(environ={"SLURM_JOB_ID": "123"}) == "123"
    assert default_run_id(environ={"SLURM_JOB_ID": "130", "SLURM_ARRAY_JOB_ID": "123", "SLURM_ARRAY_TASK_ID": "7"}) == "123_7"
    assert default_run_id("%Y", environ={}).isdigit()
    monkeypatch.setenv("SLURM_JOB_ID", "98765")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    cfg = _compose(hydra=True)
    assert cfg.run_id == "98765" and cfg.hydra.run.dir.endswith("/toy/98765")  # a requeued job finds its folder
    assert _compose("run_id=mine").run_id == "mine"


def test_resume_takes_the_newest_of_last_and_lightning_hpc_checkpoints(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    assert find_resume_checkpoint(checkpoints, tmp_path) is None
    checkpoints.mkdir()
    last, hpc = checkpoints / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    atomic_torch_save({"step": 1}, last)
    assert find_resume_checkpoint(checkpoints, tmp_path) == last
    atomic_torch_save({"step": 2}, hpc)
    os.utime(last, ns=(1_000_000_000, 1_000_000_000))
    assert find_resume_checkpoint(checkpoints, tmp_path) == hpc
    assert find_resume_checkpoint(checkpoints) == last


def test_requeue_signal_only_records_and_chains_to_a_previous_handler():
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))  # e.g. submitit's
    try:
        with RequeueSignal(["SIGUSR1", "SIGUSR2"]) as requeue:
            assert not requeue.requested
            os.kill(os.getpid(), signal.SIGUSR2)
            assert requeue.requested and not calls  # the handler itself does nothing else
            requeue.requeue(is_global_zero=True)
            assert calls == [signal.SIGUSR2]  # after the save, the launcher's own requeue runs
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGUSR2)
        assert calls == [signal.SIGUSR2] * 2  # restored
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_requeue_runs_scontrol_for_the_job(monkeypatch):
    commands = []
    monkeypatch.setattr(preemption.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(preemption.subprocess, "run", lambda cmd, **kw: commands.append(cmd) or SimpleNamespace(returncode=0, stderr=""))
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "500")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    with RequeueSignal(["SIGUSR1"]) as requeue:
        os.kill(os.getpid(), signal.SIGUSR1)
        requeue.requeue(is_global_zero=False)
        assert commands == []  # rank 0 requeues
        requeue.requeue(is_global_zero=True)
    assert commands == [["scontrol", "requeue", "500_3"]]


class _Trainer(SimpleNamespace):
    def save_checkpoint(self, path):
        self.saved.append((path, self.global_step))


def test_callback_saves_at_an_optimizer_step_boundary_then_exits(tmp_path):
    """Saved when the step ends; the processes exit when the next batch starts (the step is logged by then)."""
    trainer = _Trainer(accumulate_grad_batches=2, num_training_batches=10, global_step=3, is_global_zero=True, saved=[],
                       strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision))  # fmt: skip
    with RequeueSignal(["SIGUSR1"], requeue=False) as requeue:
        callback = CheckpointAndRequeue(requeue, tmp_path / "last.ckpt")
        callback.on_train_batch_end(trainer, None, None, None, batch_idx=5)
        callback.on_train_batch_start(trainer, None, None, batch_idx=6)  # nothing requested: nothing happens
        os.kill(os.getpid(), signal.SIGUSR1)
        callback.on_train_batch_end(trainer, None, None, None, batch_idx=6)  # mid-accumulation: later
        assert trainer.saved == []
        callback.on_train_batch_end(trainer, None, None, None, batch_idx=7)
        assert trainer.saved == [(str(tmp_path / "last.ckpt"), 3)]
        trainer.global_step = 4  # the optimiser step of batch 7 is done by the next batch start
        with pytest.raises(Requeued) as stop:
            callback.on_train_batch_start(trainer, None, None, batch_idx=8)
    assert trainer.saved == [(str(tmp_path / "last.ckpt"), 3)]
    assert stop.value.code == EXIT_REQUEUED and stop.value.step == 3


def test_a_signal_in_an_epochs_last_batch_is_served_after_validation(tmp_path):
    trainer = _Trainer(accumulate_grad_batches=1, num_training_batches=10, global_step=10, is_global_zero=True, saved=[],
                       strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision))  # fmt: skip
    with RequeueSignal(["SIGUSR1"], requeue=False) as requeue:
        callback = CheckpointAndRequeue(requeue, tmp_path / "last.ckpt")
        os.kill(os.getpid(), signal.SIGUSR1)
        callback.on_train_batch_end(trainer, None, None, None, batch_idx=9)
        assert trainer.saved == []  # Lightning validates next; a save here would resume without that validation
        with pytest.raises(Requeued) as stop:
            callback.on_train_epoch_end(trainer, None)
    assert trainer.saved == [(str(tmp_path / "last.ckpt"), 10)] and stop.value.step == 10


def test_every_rank_acts_when_any_rank_got_the_signal(tmp_path):
    trainer = _Trainer(accumulate_grad_batches=1, num_training_batches=10, global_step=4, is_global_zero=False, saved=[],
                       strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: True))  # another rank has it
    with RequeueSignal(["SIGUSR1"], requeue=False) as requeue:
        callback = CheckpointAndRequeue(requeue, tmp_path / "last.ckpt")
        callback.on_train_batch_end(trainer, None, None, None, batch_idx=0)
        with pytest.raises(Requeued):
            callback.on_train_batch_start(trainer, None, None, batch_idx=1)
    assert trainer.saved and requeue.received == signal.SIGUSR1


def test_lightning_slurm_auto_requeue_is_off_under_slurm(monkeypatch):
    from lightning_fabric.plugins.environments import SLURMEnvironment

    from covr.training.run import _plugins

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert not any(isinstance(p, SLURMEnvironment) for p in _plugins())
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "covr")
    (slurm,) = [p for p in _plugins() if isinstance(p, SLURMEnvironment)]
    assert slurm.auto_requeue is False  # covr's CheckpointAndRequeue handles the signal


def test_train_config_defaults():
    cfg = _compose()
    assert OmegaConf.to_container(cfg.preemption) == {"signals": ["SIGUSR1", "SIGUSR2"], "requeue": True}
    assert cfg.model.gradient_checkpointing is False
    assert _compose("model.gradient_checkpointing=true").model.gradient_checkpointing is True


def test_sbatch_example_requeues_on_sigusr1():
    script = (REPO / "scripts" / "slurm" / "train.sbatch").read_text()
    for line in ("#SBATCH --signal=SIGUSR1@90", "#SBATCH --requeue", "srun --kill-on-bad-exit=1 python train.py trainer=ddp_multinode"):
        assert line in script
    assert Path(REPO / "scripts" / "slurm" / "extract.sbatch").is_file()


def test_extraction_takes_the_gpu_of_its_node_local_rank(monkeypatch):
    import torch

    from covr.tools import extract_embeddings as tool

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert tool.default_device({"SLURM_LOCALID": "6", "LOCAL_RANK": "1"}) == "cuda:2"  # 2 tasks per GPU: wraps
    assert tool.default_device({"LOCAL_RANK": "1"}) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # srun --gpus-per-task=1 binds one GPU per task
    assert tool.default_device({"SLURM_LOCALID": "3"}) == "cuda:0"
