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


def close_finished_epoch(trainer: L.Trainer) -> None:
    """Zero the batch counter of an epoch that has fully ended, as the next epoch's start would.

    Lightning raises ``SIGTERMException`` for a signal seen in an epoch's last batch only after the epoch
    has ended (``FitLoop.on_advance_end``), with the batch counter still at the epoch's length. Restored from
    such a checkpoint, Lightning takes the next epoch as already run and skips its batches, so the resumed run
    trains on other data than the uninterrupted one (tests/test_faults.py, the epoch-end case).
    """
    epochs = trainer.fit_loop.epoch_progress.current
    if epochs.completed == epochs.ready:  # no epoch in progress: the last one closed, the next not begun
        trainer.fit_loop.epoch_loop.batch_progress.reset_on_run()


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
