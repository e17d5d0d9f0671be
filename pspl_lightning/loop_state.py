"""Lightning's fit-loop state, read and set for exact resume: the one module that touches the loop's
internals (counters Lightning does not document as public) and works around the order in which it
restores them. Each function names what it does for the run; a Lightning upgrade that moves a counter
breaks here alone, and tests/test_logged_steps.py, test_resume.py and test_faults.py fail when one drifts.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
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


def _at_optimizer_step_boundary(trainer: L.Trainer) -> bool:
    """The next training batch starts an optimizer step (the same answer on every rank)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready % trainer.accumulate_grad_batches == 0


class _StopAtStepBoundaries:
    """Mixed into Lightning's signal connector: SIGTERM and SLURM's requeue signal only record themselves
    (:mod:`pspl_lightning.launch.stop_requests`), and Lightning's checks of ``received_sigterm`` see a stop
    only where it is safe.

    One process: once the current optimizer step is made (a signal inside a gradient-accumulation window
    waits for the window's update; mid-window the checkpoint held neither the accumulated gradients nor
    the update, and the resumed run stepped on the window's remaining batches alone). Several ranks: once
    every rank has agreed on it in :func:`agree_on_stop_requests`, so every rank raises at the same batch
    and saves together (Lightning's handler broadcast from inside the signal handler, which hung when the
    signal landed during another collective). Never inside a validation of the fit: it completes and is
    saved first (stopped in the middle, the resumed run skipped that validation and its logged metrics)."""

    def register_signal_handlers(self) -> None:
        from pspl_lightning.launch.stop_requests import hold_stop_requests

        self._original_handlers = self._get_current_signal_handlers()
        hold_stop_requests()

    def teardown(self) -> None:
        from pspl_lightning.launch.stop_requests import clear, stop_signals

        # the stop was honoured (or the run ended): a next run in this process starts without it
        clear(self.__dict__.pop("_agreed", 0))
        if spawns_its_ranks(self.trainer):  # (teardown runs in the ranks only)
            # a ddp_spawn rank whose run is over: a late request (passed on by the waiting process, or sent
            # to every process of the job) has nothing left to stop. Ignored, not recorded: Python puts its
            # own handlers back to the default action when it exits, and a SIGTERM there killed the rank
            # while it handed its results back (a finished run reported as stopped); SIG_IGN stays.
            self._original_handlers = dict.fromkeys((*stop_signals(), signal.SIGINT), signal.SIG_IGN)
        super().teardown()

    @property
    def received_sigterm(self) -> bool:
        from pspl_lightning.launch.stop_requests import requested

        if self.trainer.world_size > 1:
            return self.__dict__.get("_agreed", 0) > 0
        trainer = self.trainer
        return (requested() > 0 and not in_accumulation_window(trainer) and not trainer.sanity_checking
                and not (trainer.validating and trainer.state.fn == "fit"))

    @received_sigterm.setter
    def received_sigterm(self, value: bool) -> None:  # Lightning resets it to False when it registers
        from pspl_lightning.launch import stop_requests

        if value:
            stop_requests.request()


def agreed_stop_signal(trainer: L.Trainer) -> int:
    """The signal all ranks agreed to stop for (0: none yet); on one process, the one this process got."""
    from pspl_lightning.launch.stop_requests import requested

    if trainer.world_size > 1:
        return trainer._signal_connector.__dict__.get("_agreed", 0)
    return requested() if trainer.received_sigterm else 0


def agree_on_stop_requests(trainer: L.Trainer) -> bool:
    """Combine every rank's stop request (one all-reduce, MAX); True (on every rank) if any rank got one.

    Called at the start of each optimizer step, in place of Lightning's per-step broadcast of rank 0's
    flag (so a step costs one collective, as before): every rank reaches it equally often, so the ranks
    never wait on different operations.
    """
    import torch
    import torch.distributed as dist

    from pspl_lightning.launch.stop_requests import requested

    connector = trainer._signal_connector
    flag = torch.tensor([requested()], dtype=torch.int32, device=trainer.strategy.root_device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    connector.__dict__["_agreed"] = int(flag.item())
    return connector.__dict__["_agreed"] > 0


def stop_at_step_boundaries(trainer: L.Trainer, before_stop: Callable[[], None] | None = None) -> None:
    """Install the stop protocol of :class:`_StopAtStepBoundaries` on ``trainer`` (idempotent).

    Under DDP the agreement replaces Lightning's broadcast at the start of every training batch that starts
    an optimizer step; ``before_stop()`` runs on every rank once the ranks agreed, before the stop is raised
    (the weights check of :class:`~pspl_lightning.callbacks.guards.LastCheckpoint`).
    """

    connector = trainer._signal_connector
    if not isinstance(connector, _StopAtStepBoundaries):
        cls = type(connector)
        connector.__dict__.pop("received_sigterm", None)
        connector.__class__ = type(f"{cls.__name__}AtStepBoundaries", (_StopAtStepBoundaries, cls), {})
    epoch_loop = trainer.fit_loop.epoch_loop

    def agree_at_step_start() -> None:
        if _at_optimizer_step_boundary(trainer) and agree_on_stop_requests(trainer):
            stop_now(trainer, before_stop)

    epoch_loop._broadcast_sigterm_tensor = agree_at_step_start


def stop_now(trainer: L.Trainer, before_stop: Callable[[], None] | None) -> None:
    """Every rank, at the point they agreed on: ``before_stop()`` (the save), then the stop. Under
    ``ddp_spawn`` the ranks are processes whose exceptions Lightning's callbacks never see and torch's
    spawn drops a ``SystemExit`` without a word: the save happens here and the stop is an ordinary error
    that reaches the waiting process (``StopRequested``)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from pspl_lightning.errors import StopRequested

    if before_stop is not None:
        before_stop()
    release_child_observer()
    if spawns_its_ranks(trainer):
        raise StopRequested("stopped by a stop request after saving checkpoints/last.ckpt")
    raise SIGTERMException


def spawns_its_ranks(trainer: L.Trainer) -> bool:
    """The trainer runs under ``ddp_spawn``: its ranks are processes torch's spawn started, and the process
    that called ``fit`` only waits for them."""
    return type(trainer.strategy.launcher).__name__ == "_MultiProcessingLauncher"


def release_child_observer() -> None:
    """Rank 0 of Lightning's ``ddp`` launcher stops as asked: end the thread that watches the other ranks.

    Every 5 s it looks at them, and one that has ended with a non-zero status (143 or 130: the same stop)
    makes it SIGKILL them all and rank 0 itself, which then ended with 137 and no line when it was still
    finishing its own stop (saving, writing logs, exiting). A rank that stops, stops with all the others
    (they agreed on it), or kills them itself (Lightning's Ctrl-C path): nothing is left to watch."""
    for thread in threading.enumerate():
        if thread.name == "child-process-observer":
            thread._run = lambda: True  # its next look ends it, with no kill (_ChildProcessObserver.run)


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
