"""Fault injectors and recorders for the reliability tests, importable by spawned and sweep processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig


class NaNWeightAt(Callback):
    """Poisons one gradient entry before the optimizer step that makes global step ``step``: Adam then
    writes a NaN into that weight, while the loss of that step was still finite (a gradient overflow)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        if trainer.global_step == self.step - 1:
            param = next(p for p in pl_module.parameters() if p.grad is not None)
            param.grad.view(-1)[0] = float("nan")


class SigtermAt(Callback):
    """SIGTERM arrives during the step that makes global step ``step``: the flag Lightning's handler sets is
    set at that batch's start (Lightning then finishes the step and raises ``SIGTERMException``)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.step - 1:
            trainer._signal_connector.received_sigterm = True


class StrategyProbe(Callback):
    """Each rank writes the strategy it really runs (class, start method, world size) to ``out_dir``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        strategy = trainer.strategy
        row = {"strategy": type(strategy).__name__, "start_method": getattr(strategy, "_start_method", None),
               "world": trainer.world_size, "launcher": type(strategy.launcher).__name__}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(row))


class StateRecorder(Callback):
    """After every training batch, records the global step, the weights, Adam's state and the LR
    scheduler's count (what a skipped batch may or may not change); ``torch.save``s the rows to ``path``."""

    def __init__(self, path: str) -> None:
        self.path, self.rows = Path(path), []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        optimizer = trainer.optimizers[0]
        self.rows.append({
            "global_step": trainer.global_step,
            "weights": {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()},
            "adam": [{k: v.clone() for k, v in s.items()} for s in optimizer.state.values()],
            "scheduler_steps": trainer.lr_scheduler_configs[0].scheduler.last_epoch,
            "lr": optimizer.param_groups[0]["lr"],
        })

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.save(self.rows, self.path)


class ReturnRecorder(HydraCallback):
    """Hydra callback: appends each sweep job's overrides, status and return value to ``path`` (JSONL)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        completed = job_return.status == JobStatus.COMPLETED  # else return_value re-raises the job's error
        value = job_return.return_value if completed else None
        row = {"overrides": list(job_return.overrides or []), "status": job_return.status.name,
               "value": None if value is None else float(value)}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def rank_files(folder: Path) -> dict[int, dict]:
    """``rank<r>.json`` files of a folder, by rank."""
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))}


def tensor_dicts_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class HpcSaveAt(Callback):
    """At global step ``step``, saves ``hpc_ckpt_<n>.ckpt`` as Lightning's SLURM SIGUSR1 handler does, then
    ends the run (the job is requeued)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir))
            trainer.should_stop = True


class SignalAt(Callback):
    """Sends a stop signal to this rank's own process at a chosen moment, read from the environment so
    that every run of a resumed chain carries the same config:
    ``PSPL_TEST_SIGNAL=<where>:<step>:<rank>[,...]`` with ``where`` one of ``save`` (inside a checkpoint
    save), ``val`` (before a validation batch), ``step`` (before a training batch) and ``end`` (in
    ``on_fit_end``, the trainer torn down), and ``rank`` a global rank or ``all``; ``PSPL_TEST_SIGNUM``
    picks the signal (default SIGTERM), ``PSPL_TEST_SIGNAL_GROUP=1`` sends it to the whole process group
    (as a terminal sends Ctrl-C: every rank and data-loader worker). Each once per folder: a marker file
    (holding the SIGTERM handler the signal met) keeps a resumed run from repeating it."""

    def _maybe_signal(self, trainer: L.Trainer, where: str) -> None:
        import os
        import signal

        for spec in filter(None, os.environ.get("PSPL_TEST_SIGNAL", "").split(",")):
            at, step, rank = spec.split(":")
            name = f"signalled_{spec.replace(':', '_')}_{trainer.global_rank}"
            marker = Path(trainer.default_root_dir) / name
            if (at == where and int(step) == trainer.global_step and rank in ("all", str(trainer.global_rank))
                    and not marker.exists()):
                marker.write_text(repr(signal.getsignal(signal.SIGTERM)))  # (what the signal meets)
                signum = int(os.environ.get("PSPL_TEST_SIGNUM", signal.SIGTERM))
                if os.environ.get("PSPL_TEST_SIGNAL_GROUP") == "1":
                    os.killpg(os.getpgrp(), signum)
                else:
                    os.kill(os.getpid(), signum)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._maybe_signal(trainer, "save")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_signal(trainer, "end")

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._maybe_signal(trainer, "val")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._maybe_signal(trainer, "step")


class KillAt(Callback):
    """SIGKILL (no handler, no save) to this process before the training batch that makes global step
    ``step + 1``, once per folder (a marker file keeps the resumed run from repeating it)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        import os
        import signal

        marker = Path(trainer.default_root_dir) / f"killed_at_{self.step}"
        if trainer.global_step == self.step and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
