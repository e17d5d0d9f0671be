"""Guards that keep a run recoverable: checkpoint on preemption, stop on non-finite weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pspl_lightning.errors import TrainingDiverged

log = logging.getLogger("pspl_lightning")


class LastCheckpoint(Callback):
    """Keeps ``checkpoints/last.ckpt`` current: every ``every_n_steps`` steps, after every validation, and
    when SIGTERM arrives (cluster preemption, ``scancel``, ``kill``).

    Lightning's ``ModelCheckpoint(save_last=True)`` skips ``last`` after a validation that did not improve
    the monitored metric and saves it once more after ``on_train_end``, when weight averaging has already
    copied the average into the network; this saves at step boundaries only, so ``resume`` always finds
    the raw weights of the latest step. On SIGTERM Lightning lets the current step finish and then raises
    ``SIGTERMException`` on every rank: the checkpoint is written then. (SLURM's SIGUSR1 before the time
    limit is handled by Lightning's own auto-requeue, which writes ``hpc_ckpt_*.ckpt``.)
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int = 1000, filename: str = "last.ckpt") -> None:
        self.path, self.every_n_steps = Path(dirpath) / filename, every_n_steps
        self._saved_step: int | None = None

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: what resume needs
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and self._saved_step != step:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Always: this validation's results (best score, loop progress) belong in the checkpoint.
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        # Lightning broadcasts SIGTERM to every rank and raises this on all of them at the same step, so
        # the collective save below cannot deadlock; it also covers a signal that arrives mid-validation.
        if isinstance(exception, SIGTERMException):
            self._save(trainer)
            log.warning("SIGTERM: saved %s at step %d", self.path, trainer.global_step)


class NonFiniteWeightGuard(Callback):
    """Every ``every_n_steps`` steps, stop if any network weight is NaN or infinite.

    The training loss is checked at every step by the module; weights are checked less often because it
    reads every parameter. Raising here keeps the last good checkpoint on disk untouched.
    """

    def __init__(self, every_n_steps: int = 100) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps <= 0 or trainer.global_step % self.every_n_steps:
            return
        for name, param in pl_module.named_parameters():
            if not torch.isfinite(param).all():
                bad = param[~torch.isfinite(param)].flatten()[0].item()
                raise TrainingDiverged(
                    f"non-finite weight {name} = {bad} after step {trainer.global_step}; the last good "
                    f"checkpoint is kept in the run's checkpoints/ folder (lower optimizer.lr, or set "
                    f"trainer.gradient_clip_val)"
                )
