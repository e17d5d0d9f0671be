"""Stop requests from the cluster (SIGTERM, SLURM's requeue signal) as a flag, never as work in a handler.

A signal handler runs between two Python bytecodes of the main thread: wherever the process is, in a
collective of the other ranks too. Lightning's own SIGTERM handler broadcasts from there and its SLURM
handler saves a checkpoint (a barrier) from there; when the signal lands while the ranks are in another
collective they wait on different operations and hang until the process-group timeout (30 min with gloo).
Here the handler only records the signal; the ranks combine their records at a step boundary
(:func:`pspl_lightning.loop_state.agree_on_stop_requests`) and then all save and stop together.

Installed as the first thing an entry point does, so a signal during start-up (imports, data setup, the
DDP rendezvous) is kept too and honoured at the first step.

Ctrl-C (SIGINT) is a stop request too, but only while a run trains, or in a rank of several processes
for its whole run (:func:`arm_interrupts`): the first one saves at the next step boundary like SIGTERM, a
second one stops at once (``KeyboardInterrupt``, nothing saved). Otherwise (start-up, data preparation,
the final evaluation of one process) it stops at once, as Python's own handler does. Data-loader workers
ignore it: a terminal sends it to every process of the job, and the run they serve decides when to stop
them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType

_state: dict[str, int] = {"signal": 0, "owner": 0, "armed": 0, "whole_run": 0, "announce": 0, "interrupts": 0,
                          "honoured": 0}
_ACKNOWLEDGED = (b"\nCtrl-C: stopping after this step, with a checkpoint (a validation under way finishes "
                 b"first); Ctrl-C again stops at once, without saving\n")
_forward: list[Callable[[int], None]] = []  # where a request goes on (the processes ddp_spawn started)


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGTERM (preemption, ``scancel``, ``kill``) and SIGUSR1 (SLURM's ``--signal=SIGUSR1@120``)."""
    return signal.SIGTERM, signal.SIGUSR1


def _record(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _state["owner"]:  # a forked data-loader worker: it ends as the default action says
        if signum == signal.SIGINT:  # (but Ctrl-C reaches it from the terminal: the run stops it)
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if signum == signal.SIGINT:
        if not _state["armed"] or _state["interrupts"]:
            raise KeyboardInterrupt  # not training, or the second Ctrl-C: at once
        _state["interrupts"] = 1
        _state["signal"] = max(_state["signal"], int(signum))
        if _state["announce"]:  # os.write: no buffer or lock of Python's, safe between any two bytecodes
            os.write(2, _ACKNOWLEDGED)
        return  # not passed on: a terminal sends it to every process of the job (a copy would be a second)
    # SIGTERM outranks SIGUSR1 (the larger number): a requeue request that is followed by the end wins
    _state["signal"] = max(_state["signal"], int(signum))
    for send in _forward:
        send(int(signum))


def forward_to(send: Callable[[int], None] | None) -> None:
    """Pass every stop request but Ctrl-C on with ``send(signum)`` (None: to nobody). Under ``ddp_spawn``
    this process only waits for the processes it started, which train: they must get the request."""
    _forward.clear()
    if send is not None:
        _forward.append(send)


def hold_stop_requests() -> None:
    """From now on, SIGTERM and SIGUSR1 only record themselves, and Ctrl-C does while a run trains (in the
    main thread; else nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state["owner"] = os.getpid()
    for sig in (*stop_signals(), signal.SIGINT):
        signal.signal(sig, _record)


def started_as_a_rank() -> bool:
    """This process was started as one rank of several, by torchrun or by Lightning's ``ddp`` launcher
    (``WORLD_SIZE`` > 1 in its environment from its start)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def ignore_from_now_on() -> None:
    """The command's work is done: a stop signal (Ctrl-C, SIGTERM, SIGUSR1) has nothing left to stop. Ignored
    (SIG_IGN, which Python keeps while it exits; its own handlers it puts back to the default action, and a
    signal in the second or so that exiting takes killed a finished command: status -2/-15, not 0)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, *stop_signals()):
            signal.signal(sig, signal.SIG_IGN)


def arm_interrupts(announce: bool = True, whole_run: bool = False) -> None:
    """Ctrl-C from now on is a stop request (the first; a second stops at once), and ``announce`` says so on
    stderr when it comes (rank 0 only).

    One process arms when its run begins to train, and disarms when it ends (:func:`disarm_interrupts`):
    before and after, Ctrl-C stops at once. A rank of several processes arms for the ``whole_run``, start-up
    included, as SIGTERM is: the ranks arm and disarm at moments of their own, and one rank stopping at once
    while another waited for it in a collective would hang or crash the job."""
    if not (whole_run or _state["whole_run"]) and _state["signal"] == signal.SIGINT:
        _state["signal"] = 0  # a Ctrl-C left by an earlier run in this process that never tore down
    if not _state["whole_run"]:
        _state["interrupts"] = 0
    _state["armed"], _state["announce"] = 1, int(announce)
    _state["whole_run"] |= int(whole_run)


def disarm_interrupts() -> None:
    """One process's run no longer trains: Ctrl-C stops at once again (a rank of several stays armed)."""
    if not _state["whole_run"]:
        _state["armed"] = 0


def requested() -> int:
    """The signal number this process has been asked to stop by (0: none)."""
    return _state["signal"]


def request(signum: int = signal.SIGTERM) -> None:
    """Record a stop request as the handler would (tests, and a caller that decides to stop)."""
    _state["signal"] = max(_state["signal"], int(signum))


def clear(agreed: int = 0) -> None:
    """Forget any stop request (a new run in this process starts with none); the one the run stopped for,
    its own or the one its ranks ``agreed`` on, stays readable (:func:`last_stop`) until the next run's."""
    _state["honoured"] = max(_state["signal"], int(agreed))
    _state["signal"] = _state["interrupts"] = 0
    if not _state["whole_run"]:
        _state["armed"] = 0


def last_stop() -> int:
    """The signal this process's run is being stopped for, or the last run that ended was asked to stop by
    (it stopped for it, or its training had already finished); 0: none."""
    return _state["signal"] or _state["honoured"]


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
