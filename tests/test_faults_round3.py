"""Faults of the third round: out of memory, an overflowing learning rate, data mistakes before the
loggers start, a run resumed at its end, and what Lightning prints beside our own lines."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pspl_lightning.cli import preflight
from pspl_lightning.cli.failures import EXIT_USER_ERROR, expected_failure, failure_line
from pspl_lightning.cli.runtime_errors import OutOfMemory
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError, DataError, UserError
from tests.conftest import TINY, compose_config
from tests.helpers.fault_probes import tensor_dicts_equal

ROOT = Path(__file__).resolve().parents[1]
CUDA_OOM = ("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.25 GiB of "
            "which 3.10 GiB is free.")
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
           "tried to allocate 26214400000 bytes. Error code 12 (Cannot allocate memory)")


class RaiseAt(Callback):
    """Raises ``torch.OutOfMemoryError`` (``cuda=True``) or the CPU allocator's RuntimeError at the start of
    the training batch of global step ``step`` (what a too large batch does on that device)."""

    def __init__(self, step: int, cuda: bool) -> None:
        self.step, self.cuda = step, cuda

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise torch.OutOfMemoryError(CUDA_OOM) if self.cuda else RuntimeError(CPU_OOM)


class SigtermAt(Callback):
    """SIGTERM arrives during the batch that starts optimizer step ``step`` (its first batch, under gradient
    accumulation), or with ``validating=True`` during the last image of the validation at step ``step``:
    the flag Lightning's handler sets is set at that batch's start."""

    def __init__(self, step: int, validating: bool = False) -> None:
        self.step, self.validating = step, validating

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self.validating and trainer.global_step == self.step - 1 and not trainer.received_sigterm:
            trainer._signal_connector.received_sigterm = True

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        last = batch_idx == trainer.num_val_batches[dataloader_idx] - 1
        if self.validating and trainer.global_step == self.step and last:
            trainer._signal_connector.received_sigterm = True


class HpcBetweenEpochs(Callback):
    """Just before epoch ``epoch`` starts (Lightning sets the sampler's epoch after closing the last one),
    SLURM's requeue signal arrives: ``signal=True`` sends SIGUSR1 to this process (a stop request: the run
    saves ``last.ckpt`` at the next step boundary and calls ``scontrol requeue``); else ``hpc_ckpt_1.ckpt``
    is saved at once, as Lightning's own SLURM handler saves it whenever the signal arrives."""

    def __init__(self, epoch: int, signal: bool = False) -> None:
        self.epoch, self.signal = epoch, signal

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        set_epoch = sampler.set_epoch
        folder = Path(trainer.default_root_dir)

        def set_epoch_and_signal(epoch: int) -> None:
            set_epoch(epoch)
            done = list(folder.glob("hpc_ckpt_*.ckpt")) or (folder / "checkpoints" / "last.ckpt").exists()
            if epoch == self.epoch and not done:  # once: not in the requeued job
                if self.signal:
                    os.kill(os.getpid(), signal.SIGUSR1)
                else:
                    trainer.save_checkpoint(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir))

        sampler.set_epoch = set_epoch_and_signal


def _cfg(root: Path, sample_root: Path, *overrides: str):
    return compose_config("train", [*TINY, f"data.root={sample_root}", *overrides], root)


def test_a_batch_that_cannot_fit_is_refused_before_it_is_made(sample_root: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``data.batch_size=100000`` on the sample set: refused with the sizes before the trainer, the loggers
    and the loader exist (it used to build 6 GB of patches, then fail in the first convolution)."""
    limit = [25_300_000_000]
    monkeypatch.setattr(preflight, "memory_limit", lambda accelerator: (limit[0], "this machine's memory"))
    import pspl_lightning.cli.build as build

    monkeypatch.setattr(build, "build_trainer", lambda *a, **k: pytest.fail("the trainer was built"))
    cfg = _cfg(tmp_path, sample_root, "data.batch_size=100000", "model.n_feats=64")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    # EDSR's largest activation for a 32 x 32 LR patch: the upsampler's 4 x 64 channels, in float32
    assert str(err.value) == (
        "data.batch_size=100000 does not fit in memory: a batch of 100000 HR patches of 32 pixels "
        "(data.patch_size, x2) through EDSR at trainer.precision=32-true needs more than 26.5 GB (its "
        "largest activation alone, 256 x 16 x 16 per patch, takes 26.2 GB), and this machine's memory is "
        "25.3 GB: lower data.batch_size (or data.patch_size), or train with trainer.precision=bf16-mixed")
    assert failure_line(err.value)[1] == EXIT_USER_ERROR
    half = _cfg(tmp_path, sample_root, "data.batch_size=100000", "model.n_feats=64",
                "trainer.precision=bf16-mixed")
    half_net = build.build_module(half).plain_net
    preflight.check_memory(half, half_net)  # 2 bytes an activation: 13.4 GB fit in 25.3
    limit[0] = 10_000_000_000
    with pytest.raises(ConfigError, match=r"at trainer.precision=bf16-mixed needs more than 13.4 GB .* "
                                          r"13.1 GB\), and this machine's memory is 10.0 GB: lower "
                                          r"data.batch_size \(or data.patch_size\)$"):
        preflight.check_memory(half, half_net)
    ok = _cfg(tmp_path, sample_root, "data.batch_size=30000", "model.n_feats=64")
    preflight.check_memory(ok, build.build_module(ok).plain_net)  # 8.0 GB: not refused


# TINY EDSR x2: head, 2 convs of the resblock and the body's last, upsampler, tail, the two mean shifts
PARAMS = 3 * 8 * 9 + 8 + 3 * (8 * 8 * 9 + 8) + 8 * 32 * 9 + 32 + 8 * 3 * 9 + 3 + 2 * (3 * 3 + 3)


@pytest.mark.parametrize(("cuda", "asked"), [(True, "20.00 GiB"), (False, "26.2 GB")])
def test_out_of_memory_in_training_is_one_line(sample_root: Path, tmp_path: Path, cuda: bool,
                                               asked: str) -> None:
    cfg = _cfg(tmp_path, sample_root, f"+callbacks.oom._target_={__name__}.RaiseAt", "+callbacks.oom.step=1",
               f"+callbacks.oom.cuda={cuda}")
    with pytest.raises(OutOfMemory) as err:
        train(cfg)
    assert str(err.value) == (
        f"Out of memory at step 1 (train): it tried to allocate {asked} with data.batch_size=4, "
        f"data.patch_size=32 (x2), EDSR ({PARAMS:,} parameters), trainer.precision=32-true: lower "
        f"data.batch_size or data.patch_size, or use trainer.precision=bf16-mixed")
    assert isinstance(err.value, UserError) and expected_failure(err.value) is err.value
    assert failure_line(err.value) == (str(err.value), EXIT_USER_ERROR)


def test_an_overflowing_learning_rate_is_one_line(sample_root: Path, tmp_path: Path) -> None:
    """Adam's update with lr 1e38 (its step size lr / (1 - beta1) passes float32's 3.4e38)."""
    with pytest.raises(UserError, match=r"^optimizer.lr=1e\+38 overflows float32 in the optimizer's update "
                                        r"at step 0 \(.*without overflow.*\): use a smaller learning rate"):
        train(_cfg(tmp_path, sample_root, "optimizer.lr=1e38"))


@pytest.mark.parametrize("mistake", ["data.patch_size=2048", "data=div2k"])
def test_a_data_mistake_starts_no_logger(sample_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         mistake: str) -> None:
    """With the default W&B logger (offline): the data is checked before any logger starts, so no W&B run is
    made (it printed ~16 lines before the error) and the run folder stays empty (the entry point removes
    it); before, ``wandb/offline-run-*`` and ``csv/`` were left behind."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "empty").mkdir()
    root = tmp_path / "empty" if mistake == "data=div2k" else sample_root
    cfg = compose_config("train", [*TINY, "logger=[wandb,csv]", mistake, f"data.root={root}"], tmp_path)
    with pytest.raises(DataError, match="smaller than the LR patch of 1024" if "patch" in mistake else
                       "DIV2K_train_HR does not exist"):
        train(cfg)
    assert list(Path(cfg.paths.output_dir).iterdir()) == []
    wandb = sys.modules.get("wandb")
    assert wandb is None or wandb.run is None


def test_a_checkpoint_at_max_steps_given_as_ckpt_path_is_one_line(sample_root: Path, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """It exited 0 with no validation, no checkpoint and no metrics.json in the new folder. (The first run
    also shows the model summary: without Lightning's FLOPs, which were 0, column and total.)"""
    done = _cfg(tmp_path / "a", sample_root, "trainer.max_steps=2", "trainer.enable_model_summary=true")
    with caplog.at_level(logging.INFO, logger="pspl_lightning"):
        train(done)
    summary = next(r.getMessage() for r in caplog.records if "Total params" in r.getMessage())
    assert "Trainable params" in summary and "net " in summary and "FLOPs" not in summary
    assert "Flops" not in summary
    last = Path(done.paths.output_dir) / "checkpoints" / "last.ckpt"
    again = _cfg(tmp_path / "b", sample_root, "trainer.max_steps=2", f"ckpt_path={last}")
    with pytest.raises(ConfigError, match=rf"^ckpt_path={last} is at step 2 and trainer.max_steps=2: nothing "
                                          rf"is left to train; raise trainer.max_steps .* pspl-eval "
                                          rf"ckpt={last}$"):
        train(again)
    assert not list(Path(again.paths.output_dir).iterdir())  # nothing written: the entry point removes it


def test_lightnings_cloud_advert_is_not_printed(caplog: pytest.LogCaptureFixture) -> None:
    from pspl_lightning.cli.lightning_notices import _DropAdvert, quiet_lightning

    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    for installed in [f for f in rank_zero.filters if isinstance(f, _DropAdvert)]:  # by an earlier train()
        rank_zero.removeFilter(installed)
    with caplog.at_level(logging.INFO):
        L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    from lightning.pytorch.trainer.connectors.logger_connector import logger_connector

    advertises = "litlogger" in Path(logger_connector.__file__).read_text()  # Lightning 2.6.0 does not
    assert any("litlogger" in r.getMessage() for r in caplog.records) == advertises  # printed unfiltered
    caplog.clear()
    quiet_lightning()
    with caplog.at_level(logging.INFO):
        L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    assert not any("litlogger" in r.getMessage() for r in caplog.records)
    assert any("GPU available" in r.getMessage() for r in caplog.records)  # its other lines stay


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {k: v for k, v in state["state_dict"].items() if k.startswith("net.")}


def _last(cfg) -> Path:
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


NO_SAVES = ["trainer.val_check_interval=1000", "schedule.checkpoint_every_n_steps=1000"]
ACCUMULATED = [*NO_SAVES, "trainer.accumulate_grad_batches=2", "data.repeat=4"]


@pytest.fixture(scope="module")
def accumulated_5_steps(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The weights of the uninterrupted 5-step run with gradient accumulation (shared by both cases)."""
    straight = _cfg(tmp_path_factory.mktemp("straight"), sample_root, *ACCUMULATED, "trainer.max_steps=5")
    train(straight)
    return _weights(_last(straight))


@pytest.mark.parametrize("step", [2, 3])
def test_sigterm_in_an_accumulation_window_resumes_exactly(sample_root: Path, tmp_path: Path, step: int,
                                                           accumulated_5_steps: dict) -> None:
    """Accumulation 2, epochs of 3 optimizer steps; the signal arrives in the first batch of step 2
    (mid-epoch) or of step 3 (the epoch's last window). Lightning stopped after that batch: the checkpoint
    had neither the accumulated gradient nor the step, and the resumed run stepped on the window's second
    batch alone. The stop now waits for the window's optimizer step."""
    common = ACCUMULATED
    stopped = _cfg(tmp_path / "a", sample_root, *common, "trainer.max_steps=1000",
                   f"+callbacks.term._target_={__name__}.SigtermAt", f"+callbacks.term.step={step}")
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException
        train(stopped)
    assert torch.load(_last(stopped), map_location="cpu", weights_only=True)["global_step"] == step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(_cfg(tmp_path / "b", sample_root, *common, "trainer.max_steps=5",
                   f"resume={stopped.paths.output_dir}"))
    assert not [w for w in caught if "not resumable" in str(w.message)]  # Lightning's, beside our claim
    assert tensor_dicts_equal(_weights(_last(stopped)), accumulated_5_steps)


def test_sigterm_in_the_step_that_reaches_max_steps_keeps_the_cut_epoch(sample_root: Path,
                                                                         tmp_path: Path) -> None:
    """Epochs of 3 steps, max_steps=5 (mid-epoch 1) and the signal in step 5's final validation (its last
    image: the validation completes): the run's checkpoint must go on in epoch 1 when a longer run resumes
    it. Lightning stops after it has ended that epoch, and the SIGTERM save closed it: the resumed run
    skipped its last batch."""
    stopped = _cfg(tmp_path / "a", sample_root, *NO_SAVES, "trainer.max_steps=5",
                   f"+callbacks.term._target_={__name__}.SigtermAt", "+callbacks.term.step=5",
                   "+callbacks.term.validating=true")
    with pytest.raises(SystemExit):
        train(stopped)
    assert json.loads((Path(stopped.paths.output_dir) / "metrics.json").read_text())["global_step"] == 5
    train(_cfg(tmp_path / "b", sample_root, *NO_SAVES, "trainer.max_steps=7",
               f"resume={stopped.paths.output_dir}"))
    straight = _cfg(tmp_path / "c", sample_root, *NO_SAVES, "trainer.max_steps=7")
    train(straight)
    assert tensor_dicts_equal(_weights(_last(stopped)), _weights(_last(straight)))


def test_an_hpc_checkpoint_between_epochs_resumes_exactly(sample_root: Path, tmp_path: Path) -> None:
    """SLURM's hpc_ckpt is written whenever its signal arrives; between two epochs it recorded the ended
    epoch with its batch counter full, and the requeued job skipped the next epoch's batches."""
    run = _cfg(tmp_path / "a", sample_root, *NO_SAVES, "trainer.max_steps=5",
               f"+callbacks.hpc._target_={__name__}.HpcBetweenEpochs", "+callbacks.hpc.epoch=1")
    train(run)  # uninterrupted: the hpc checkpoint is saved on the way
    hpc = Path(run.paths.output_dir) / "hpc_ckpt_1.ckpt"
    state = torch.load(hpc, map_location="cpu", weights_only=True)
    assert (state["global_step"], state["epoch"]) == (3, 1)
    requeued = _cfg(tmp_path / "b", sample_root, *NO_SAVES, "trainer.max_steps=5", f"ckpt_path={hpc}")
    train(requeued)
    assert tensor_dicts_equal(_weights(_last(requeued)), _weights(_last(run)))


def test_a_slurm_sweep_without_slurm_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pspl-train -m hydra/launcher=slurm ...`` on a machine without SLURM: submitit's "Could not detect
    srun" traceback before; now one line before Hydra starts (and the launcher config composes with the
    single-device trainers, whose missing trainer.num_nodes was a traceback of its own)."""
    from pspl_lightning.cli.launcher_check import refuse_unavailable_launcher

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"^hydra/launcher=slurm submits each sweep job through SLURM, but "
                                          r"'srun' is not on this machine's PATH: run the sweep on the "
                                          r"cluster's login node, or sweep .* hydra/launcher=local_parallel"):
        refuse_unavailable_launcher(["-m", "hydra/launcher=slurm", "loss.alpha=0.3,1"])
    refuse_unavailable_launcher(["hydra/launcher=slurm"])  # no sweep: Hydra does not launch
    refuse_unavailable_launcher(["-m", "hydra/launcher=local_parallel"])
    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    refuse_unavailable_launcher(["-m", "hydra/launcher=slurm"])  # on a cluster: submitit's turn
    cfg = compose_config("train", ["hydra/launcher=slurm"], tmp_path)
    assert cfg.hydra.launcher.nodes == 1
    assert compose_config("train", ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=4"],
                          tmp_path).hydra.launcher.nodes == 4


@pytest.mark.slow
def test_a_requeued_slurm_job_continues_bit_for_bit(sample_root: Path, tmp_path: Path) -> None:
    """The real path once, through the entry point: a SLURM environment, SIGUSR1 between two epochs (a
    stop request: the run saves ``checkpoints/last.ckpt`` at the next step boundary, then asks for the
    requeue) and a stub ``scontrol`` on PATH that records the requeue and kills the job, as SLURM does; the
    same command again (the requeued job) continues from the job's ``last.ckpt`` and ends with the weights
    of the uninterrupted run. The fast variant of the closed-epoch claim (a checkpoint written between two
    epochs) is test_an_hpc_checkpoint_between_epochs_resumes_exactly."""
    bin_dir, requeues = tmp_path / "bin", tmp_path / "requeues.txt"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {requeues}\nkill -KILL $PPID\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PSPL_ROOT": str(tmp_path), "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT),
           "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0",
           "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}
    env.pop("SLURM_ARRAY_JOB_ID", None)
    args = [sys.executable, "-m", "pspl_lightning.cli.train", *TINY, f"data.root={sample_root}", *NO_SAVES,
            "trainer.max_steps=5", f"+callbacks.hpc._target_={__name__}.HpcBetweenEpochs",
            "+callbacks.hpc.epoch=1", "+callbacks.hpc.signal=true"]
    job = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == -signal.SIGKILL, job.stdout[-2000:] + job.stderr[-2000:]
    assert requeues.read_text() == "requeue 4242\n"
    folder = tmp_path / "outputs" / "train" / "runs" / "slurm-4242-0"
    assert [p.name for p in folder.glob("**/*.ckpt")] == ["last.ckpt"]
    requeued = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert requeued.returncode == 0, requeued.stdout[-2000:] + requeued.stderr[-2000:]
    assert json.loads((folder / "metrics.json").read_text())["global_step"] == 5
    straight = _cfg(tmp_path / "straight", sample_root, *NO_SAVES, "trainer.max_steps=5")
    train(straight)
    assert tensor_dicts_equal(_weights(folder / "checkpoints" / "last.ckpt"), _weights(_last(straight)))


def test_docs_stand_alone_and_quote_what_readme_says() -> None:
    """No doc points to a DESIGN.md the project does not have; every figure BENCHMARKS.md attributes to the
    README is in the README; the Makefile's Python is pyproject's requires-python, as README says."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert not [d.name for d in docs if "DESIGN.md" in d.read_text()]
    readme = (ROOT / "README.md").read_text()
    quoting = [p for p in (ROOT / "docs" / "BENCHMARKS.md").read_text().split("\n\n") if "README" in p]
    quoted = {n for p in quoting for n in re.findall(r"\b\d\d\.\d{4}\b", p)}
    assert quoted and not {n for n in quoted if n not in readme}
    version = re.search(r'^requires-python = ">=([0-9.]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert f"Python {version}+" in readme and f"Python {version}+" in (ROOT / "Makefile").read_text()
