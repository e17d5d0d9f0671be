"""Lightning's fit-loop state, read and set for exact resume: the one module that touches the loop's
internals (counters Lightning does not document as public) and works around the order in which it
restores them. Each function names what it does for the run; a Lightning upgrade that moves a counter
breaks here alone, and tests/test_logged_steps.py, test_resume.py and test_faults.py fail when one drifts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
from torch.utils.data import DataLoader


def batches_done_in_epoch(trainer: L.Trainer | None) -> int:
    """Batches of the current epoch the trainer has completed (0 without a trainer): where a (resumed)
    epoch's data stream starts. Lightning restores this counter from the checkpoint."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed if trainer is not None else 0


def align_logged_step(trainer: L.Trainer) -> None:
    """Make the loggers' step counter equal the global step (call before every training batch).

    Loggers write each metric at Lightning's ``_batches_that_stepped``, which equals the global step before
    every batch of a run, but which Lightning restores one or two steps off when a run resumes from a
    checkpoint saved at a batch end or after a validation (seen with the CSV logger). Resetting it makes a
    resumed run log every metric at the step the uninterrupted run logs it at."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step


def close_finished_epoch(trainer: L.Trainer) -> bool:
    """Zero the batch counter of an epoch whose batches all ran, once it has ended, as the next epoch's
    start would; True if it did.

    Lightning raises ``SIGTERMException`` for a signal seen in an epoch's last batch only after the epoch
    has ended (``FitLoop.on_advance_end``), with the batch counter still at the epoch's length, and SLURM's
    ``hpc_ckpt`` is written whenever its signal arrives, between two epochs too. Restored from such a
    checkpoint, Lightning takes the next epoch as already run and skips its batches, so the resumed run
    trains on other data than the uninterrupted one (tests/test_faults.py, the epoch-end case). An epoch
    cut short by ``max_steps`` ends too, but a longer run goes on in it: its counter stays.
    """
    epochs = trainer.fit_loop.epoch_progress.current
    batches = trainer.fit_loop.epoch_loop.batch_progress
    ran_out = batches.current.completed >= trainer.num_training_batches
    if epochs.completed == epochs.ready and ran_out:  # the last epoch closed, the next not begun
        batches.reset_on_run()
        return True
    return False


def close_finished_epoch_in(trainer: L.Trainer, checkpoint: dict[str, Any]) -> None:
    """:func:`close_finished_epoch` for a checkpoint being written (from ``on_save_checkpoint``): the
    loop's state in it is taken again after closing."""
    if "loops" in checkpoint and close_finished_epoch(trainer):
        checkpoint["loops"]["fit_loop"] = trainer.fit_loop.state_dict()


def in_accumulation_window(trainer: L.Trainer) -> bool:
    """Training with gradient accumulation, with some of the current optimizer step's batches run and
    its update not yet made (an epoch's last batch always closes its window)."""
    accumulate = trainer.accumulate_grad_batches
    progress = trainer.fit_loop.epoch_loop.batch_progress
    ready = progress.current.ready
    return (trainer.training and accumulate > 1 and ready % accumulate != 0 and not progress.is_last_batch
            and ready < trainer.num_training_batches)


class _SigtermAtOptimizerSteps:
    """Mixed into Lightning's signal connector: a SIGTERM is held back while an accumulation window is
    open, so that every check of it (after a batch, before the next under DDP, after an epoch) sees it
    only once the window's optimizer step is made. Lightning stops after the batch the signal arrived in;
    mid-window the checkpoint held neither the accumulated gradients nor the window's update, and the
    resumed run stepped on the window's remaining batches alone."""

    @property
    def received_sigterm(self) -> bool:
        return self.__dict__.get("_pending_sigterm", False) and not in_accumulation_window(self.trainer)

    @received_sigterm.setter
    def received_sigterm(self, value: bool) -> None:
        self.__dict__["_pending_sigterm"] = value


def stop_at_optimizer_steps(trainer: L.Trainer) -> None:
    """Let a SIGTERM stop ``trainer`` at optimizer steps only (see :class:`_SigtermAtOptimizerSteps`)."""
    connector = trainer._signal_connector
    if isinstance(connector, _SigtermAtOptimizerSteps):
        return
    pending = connector.__dict__.pop("received_sigterm", False)
    cls = type(connector)
    connector.__class__ = type(f"{cls.__name__}AtOptimizerSteps", (_SigtermAtOptimizerSteps, cls), {})
    connector.received_sigterm = pending


class LazyStartDataLoader(DataLoader):
    """A DataLoader whose iterator starts at its first batch, not when it is made.

    With workers, ``iter(DataLoader)`` draws its first indices from the sampler at once. Lightning makes a
    resumed run's iterator before it sets the sampler's epoch and settles its batch counters, so a sampler
    reading :func:`batches_done_in_epoch` would read a stale epoch and position there (without workers,
    indices are drawn lazily and all was well). Started at the first ``next()``, in the epoch loop, it
    reads them as they are meant to be, whatever the number of workers."""

    def __iter__(self) -> Iterator[Any]:
        return _LazyIterator(self)


class _LazyIterator:
    def __init__(self, loader: DataLoader) -> None:
        self.loader, self.iterator = loader, None

    def __iter__(self) -> _LazyIterator:
        return self

    def __next__(self) -> Any:
        if self.iterator is None:
            self.iterator = DataLoader.__iter__(self.loader)
        return next(self.iterator)
