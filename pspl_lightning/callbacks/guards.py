"""Guards that keep a run recoverable: checkpoint on preemption, stop on non-finite weights, and never
write a checkpoint whose weights hold a NaN or an Inf."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable, Mapping
from itertools import chain
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pspl_lightning.errors import ConfigError, TrainingDiverged
from pspl_lightning.launch.stop_requests import arm_interrupts, disarm_interrupts, requeue_slurm_job
from pspl_lightning.loop_state import (
    agreed_stop_signal,
    close_finished_epoch_in,
    release_child_observer,
    spawns_its_ranks,
    stop_at_step_boundaries,
)

log = logging.getLogger("pspl_lightning")


class LastCheckpoint(Callback):
    """Keeps ``checkpoints/last.ckpt`` current: every ``every_n_steps`` steps, after every validation, and
    when the cluster asks the run to stop (SIGTERM: preemption, ``scancel``, ``kill``; SIGUSR1: SLURM's
    ``--signal=SIGUSR1@120``, after which the job is also requeued).

    Lightning's ``ModelCheckpoint(save_last=True)`` skips ``last`` after a validation that did not improve
    the monitored metric and saves it once more after ``on_train_end``, when weight averaging has already
    copied the average into the network; this saves at step boundaries only, so ``resume`` always finds
    the raw weights of the latest step. A stop request is a flag every rank agrees on at an optimizer-step
    boundary (a validation under way completes first),
    :func:`~pspl_lightning.loop_state.stop_at_step_boundaries`;
    then every rank raises ``SIGTERMException`` at the same point and the checkpoint is written together
    (a signal in the middle of a gradient-accumulation window waits for the window's step). Every save
    records an epoch that has run out as closed.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int = 1000, filename: str = "last.ckpt") -> None:
        self.path, self.every_n_steps = Path(dirpath) / filename, every_n_steps
        self._saved_step: int | None = None
        self._validated_step: int | None = None  # the step of the last save after a validation
        self._stopped_at: int | None = None  # the step a stop request saved at

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            stop_at_step_boundaries(trainer, before_stop=lambda: self._save_on_stop(trainer, pl_module))
            if trainer.world_size > 1 and not spawns_its_ranks(trainer):  # every rank, to its end
                arm_interrupts(announce=trainer.is_global_zero, whole_run=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Ctrl-C from now on saves, then stops. Not under ddp_spawn, where it stops at once as it always did:
        # torch's spawn ends a rank quietly on a KeyboardInterrupt (status 0, nothing handed back), and the
        # waiting process, had it waited for the ranks' save, would wait for ever for the results of a rank
        # stopped in its start-up.
        if not spawns_its_ranks(trainer):
            arm_interrupts(announce=trainer.is_global_zero)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        disarm_interrupts()

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: what resume needs
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and self._saved_step != step:
            self._save(trainer)
        if trainer.received_sigterm:
            # SIGTERMException follows this step and on_exception saves: refuse non-finite weights here, where
            # raising leaves Lightning's shutdown intact (an exception out of on_exception skips its teardown)
            refuse_nonfinite_checkpoint({"state_dict": pl_module.state_dict()}, step, trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Always: this validation's results (best score, loop progress) belong in the checkpoint.
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)
            self._validated_step = trainer.global_step

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        close_finished_epoch_in(trainer, checkpoint)
        checkpoint["pspl_world_size"] = trainer.world_size

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        refuse_another_world_size(checkpoint.get("pspl_world_size"), trainer.world_size)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        # One process: Lightning raises SIGTERMException after the step the signal came in. Several: every
        # rank saved at the step boundary they agreed on (``_save_on_stop``) before the stop was raised.
        if isinstance(exception, SIGTERMException) and self._stopped_at != trainer.global_step:
            self._save_on_stop(trainer, pl_module, check=False)  # checked after the step (on_train_batch_end)
        if isinstance(exception, KeyboardInterrupt):  # stopped at once: the entry point says what is kept
            release_child_observer()  # (Lightning kills the other ranks itself)
            _note_what_is_kept(exception, trainer)

    def _save_on_stop(self, trainer: L.Trainer, pl_module: L.LightningModule, check: bool = True) -> None:
        """The save of a stop request, on every rank; then SLURM's requeue where SIGUSR1 asked for it. The
        weights are checked first (``check``), where raising still leaves Lightning's shutdown intact."""
        self._stopped_at = trainer.global_step
        if check:
            refuse_nonfinite_checkpoint({"state_dict": pl_module.state_dict()}, trainer.global_step, trainer)
        signum = agreed_stop_signal(trainer) or signal.SIGTERM
        name = signal.Signals(signum).name
        if self._validated_step == trainer.global_step:
            # The run's last step (max_steps) saved after its final validation, within its epoch; saved
            # again now, after Lightning has ended that epoch, a longer resumed run would skip its rest.
            log.warning("%s: %s holds step %d already", name, self.path, trainer.global_step)
        else:
            try:
                self._save(trainer)
            except KeyboardInterrupt as exc:  # a second Ctrl-C during the save: the last file stays whole
                _note_what_is_kept(exc, trainer)
                raise
            log.warning("%s: saved %s at step %d", name, self.path, trainer.global_step)
        if signum == signal.SIGUSR1 and trainer.is_global_zero:
            job = requeue_slurm_job()
            if job is not None:
                log.warning("SIGUSR1: requeued SLURM job %s; it continues from %s", job, self.path)


def _note_what_is_kept(exception: BaseException, trainer: L.Trainer) -> None:
    """A run stopped at once (Ctrl-C): the line the entry point prints says at which step and which checkpoint
    is kept (once; under ``ddp_spawn`` the waiting process knows no step)."""
    if getattr(exception, "__notes__", None):
        return
    kept = kept_checkpoint(trainer)
    keeps = f"the last checkpoint is kept: {kept}" if kept else "no checkpoint was written"
    waiting = spawns_its_ranks(trainer) and not torch.distributed.is_initialized()
    where = "the ranks stopped" if waiting else f"stopped at step {trainer.global_step}"
    exception.add_note(f"{where} without saving; {keeps}")


def refuse_another_world_size(recorded: int | None, now: int) -> None:
    """A resume runs on the number of processes its checkpoint was written by (read from the processes
    that really started: ``trainer.devices=-1`` on a node with fewer GPUs is caught too).

    Each step's batch is ``data.batch_size`` x the processes, and rank ``r`` of ``W`` reads positions
    ``r, r + W, ...`` of the epoch's order: on another count the rest of the epoch would be dealt otherwise
    and every later step would average another number of patches, so the resumed run would not be the run
    it continues.
    """
    if recorded is not None and int(recorded) != now:
        raise ConfigError(
            f"the checkpoint was written by a run on {recorded} processes and this run has {now}: a resume "
            f"continues on {recorded} (trainer.devices x trainer.num_nodes); to go on with {now}, start a "
            f"new run from its weights with init_from=<checkpoint>"
        )


def first_nonfinite(named: Iterable[tuple[str, Any]]) -> tuple[str, float] | None:
    """The name and one value of the first floating tensor holding a NaN/Inf, else None (one host sync)."""
    floats = [(name, t.detach()) for name, t in named
              if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    if not floats:
        return None
    # A tensor is finite iff its min and max are (NaN propagates through both): one read of each tensor and
    # no boolean copy, much faster than isfinite(t).all() (scripts/bench_guard.py, docs/BENCHMARKS.md).
    # float64 holds every float type exactly, so a huge finite value never reads as an overflow.
    extremes = torch.stack([m.double() for _, t in floats for m in torch.aminmax(t)])
    finite = torch.isfinite(extremes).view(-1, 2).all(dim=1)
    if bool(finite.all()):
        return None
    name, t = floats[int((~finite).nonzero()[0])]
    return name, t[~torch.isfinite(t)].flatten()[0].item()


def kept_checkpoint(trainer: L.Trainer | None) -> Path | None:
    """The newest checkpoint file this run has written (its ``checkpoints/last.ckpt``, or the best one
    that ``ModelCheckpoint`` kept), else None."""
    if trainer is None:
        return None
    paths = [cb.path for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)]
    paths += [Path(p) for cb in trainer.checkpoint_callbacks
              for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")) if p]
    existing = [p for p in paths if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def _diverged(name: str, value: float, step: int, what: str, trainer: L.Trainer | None) -> TrainingDiverged:
    """The one line of a divergence: names the checkpoint that is kept, or says that none was written."""
    kept = kept_checkpoint(trainer)
    if kept is not None:
        keeps = f"the last good checkpoint is kept: {kept}"
    elif trainer is not None:
        keeps = "no checkpoint was written yet"
    else:  # a caller that knows no trainer: no checkpoint with a non-finite weight is ever written
        keeps = "no checkpoint with a non-finite weight is written"
    return TrainingDiverged(
        f"non-finite weight {name} = {value} at step {step}; {what}, {keeps} (lower optimizer.lr, or set "
        f"trainer.gradient_clip_val)"
    )


def refuse_nonfinite_checkpoint(checkpoint: Mapping[str, Any], step: int,
                                trainer: L.Trainer | None = None) -> None:
    """Raise :class:`TrainingDiverged` instead of letting a checkpoint with a NaN/Inf weight be written.

    Called from ``SRModule.on_save_checkpoint``, which Lightning runs on every rank for every save
    (``LastCheckpoint``, ``ModelCheckpoint``, SIGTERM, SLURM's ``hpc_ckpt``, weights-only saves), after the
    callbacks' hooks: under weight averaging ``state_dict`` holds the average and ``current_model_state``
    the raw weights, and both are checked. ``trainer`` (the module's) lets the message name the
    checkpoint that is kept.
    """
    weights = (checkpoint.get(key) or {} for key in ("state_dict", "current_model_state"))
    bad = first_nonfinite(chain.from_iterable(w.items() for w in weights))
    if bad is not None:
        raise _diverged(*bad, step, "checkpoint not written", trainer)


class NonFiniteWeightGuard(Callback):
    """Every ``every_n_steps`` steps, stop if any network weight is NaN or infinite.

    The training loss is checked at every step by the module, and every checkpoint's weights before it is
    written (:func:`refuse_nonfinite_checkpoint`); this also stops a diverged run between checkpoints.
    """

    def __init__(self, every_n_steps: int = 100) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps <= 0 or trainer.global_step % self.every_n_steps:
            return
        bad = first_nonfinite(pl_module.named_parameters())
        if bad is not None:
            raise _diverged(*bad, trainer.global_step, "stopped", trainer)
