"""Stop requests from the cluster (SIGTERM, SLURM's requeue signal) as a flag, never as work in a handler.

A signal handler runs between two Python bytecodes of the main thread: wherever the process is, in a
collective of the other ranks too. Lightning's own SIGTERM handler broadcasts from there and its SLURM
handler saves a checkpoint (a barrier) from there; when the signal lands while the ranks are in another
collective they wait on different operations and hang until the process-group timeout (30 min with gloo).
Here the handler only records the signal; the ranks combine their records at a step boundary
(:func:`pspl_lightning.loop_state.agree_on_stop_requests`) and then all save and stop together.

Installed as the first thing an entry point does, so a signal during start-up (imports, data setup, the
DDP rendezvous) is kept too and honoured at the first step.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType

_state: dict[str, int] = {"signal": 0, "owner": 0}
_forward: list[Callable[[int], None]] = []  # where a request goes on (the processes ddp_spawn started)


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGTERM (preemption, ``scancel``, ``kill``) and SIGUSR1 (SLURM's ``--signal=SIGUSR1@120``)."""
    return signal.SIGTERM, signal.SIGUSR1


def _record(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _state["owner"]:  # a forked data-loader worker: it ends as the default action says
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    # SIGTERM outranks SIGUSR1 (the larger number): a requeue request that is followed by the end wins
    _state["signal"] = max(_state["signal"], int(signum))
    for send in _forward:
        send(int(signum))


def forward_to(send: Callable[[int], None] | None) -> None:
    """Pass every stop request on with ``send(signum)`` (None: to nobody). Under ``ddp_spawn`` this process
    only waits for the processes it started, which train: they must get the request."""
    _forward.clear()
    if send is not None:
        _forward.append(send)


def hold_stop_requests() -> None:
    """From now on, SIGTERM and SIGUSR1 only record themselves (in the main thread; else nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state["owner"] = os.getpid()
    for sig in stop_signals():
        signal.signal(sig, _record)


def requested() -> int:
    """The signal number this process has been asked to stop by (0: none)."""
    return _state["signal"]


def request(signum: int = signal.SIGTERM) -> None:
    """Record a stop request as the handler would (tests, and a caller that decides to stop)."""
    _state["signal"] = max(_state["signal"], int(signum))


def clear() -> None:
    """Forget any stop request (a new run in this process starts with none)."""
    _state["signal"] = 0


def requeue_slurm_job() -> str | None:
    """``scontrol requeue <job>`` for the SLURM job this process runs in; the job id, or None outside SLURM.

    SLURM's requeue signal asks the job to save and come back: the job is put back in the queue, and the
    requeued job finds the saved checkpoint in its folder (``resume`` rules) and continues.
    """
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID")
    if not job or not re.fullmatch(r"[0-9_]+", job):
        return None
    subprocess.run(["scontrol", "requeue", job], check=False)
    return job
