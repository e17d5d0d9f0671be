"""How every entry point ends on an expected failure: one line for the user and an exit status.

Every ``pspl-*`` command wraps its work in :func:`one_line_failures`: a user's mistake ends it with one line
on stderr and status 2, a diverged run with status 3, SIGTERM with 143, Ctrl-C with 130. A
:class:`~pspl_lightning.errors.UserError` may reach the entry point wrapped: by Hydra's instantiate
(``InstantiationException``), as the context of another exception, or as the text of a traceback from a
spawned DDP rank (``ProcessRaisedException`` carries no exception object). Everything else is a bug and
keeps its traceback; ``HYDRA_FULL_ERROR=1`` shows the full traceback of anything (a mistake still exits 2).
A mistake leaves no folder behind: the run folder this command created, when it holds nothing a user made.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pspl_lightning import errors
from pspl_lightning.errors import ConfigError, Interrupted, TrainingDiverged, UserError
from pspl_lightning.launch.stop_requests import last_stop

log = logging.getLogger("pspl_lightning")
F = TypeVar("F", bound=Callable[..., Any])

# the last line of a spawned rank's traceback: "pspl_lightning.errors.DataError: <message>"
_RANK_ERROR = re.compile(r"^pspl_lightning\.[\w.]+\.(\w+): (.+)$", re.MULTILINE)
EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_SIGTERM, EXIT_INTERRUPTED = 2, 3, 143, 130
# config keys that moved: old key -> what to write instead (Hydra alone would say the old key is unknown)
MOVED_KEYS = {"model.init_from": "init_from=<file>"}
# what a run folder holds before it holds anything of the user's (a logger's hparams.yaml: the config again)
_RECORD_ONLY = {"resumed_into.txt", "hparams.yaml"}
# this command's run folder and the topmost folder it created for it (None: it existed); see make_run_folder
_run_folder: tuple[Path, Path | None] | None = None
_shared_run = False  # the run folder is written by several processes (see share_run_folder)


def _from_rank(text: str) -> BaseException | None:
    """The project error named on the last matching line of a spawned rank's traceback text."""
    found = _RANK_ERROR.findall(text)
    if found and found[-1][0] == "StopRequested":  # a rank stopped by a signal, after saving
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        return SIGTERMException()
    if not found:
        return None
    name, message = found[-1]
    cls = getattr(errors, name, None)
    if cls is None:  # a subclass defined elsewhere, e.g. ImageReadError or WeightsError
        return UserError(message) if name.endswith("Error") and "Diverged" not in name else None
    return cls(message) if issubclass(cls, UserError | TrainingDiverged) else None


def expected_failure(exc: BaseException) -> BaseException | None:
    """The user error, divergence or SIGTERM stop behind ``exc`` (through wrappers), else None."""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if (isinstance(err, UserError | TrainingDiverged | KeyboardInterrupt)
                or type(err).__name__ == "SIGTERMException"):
            return err
        if type(err).__name__ == "ProcessRaisedException":
            return _from_rank(str(err))
        if type(err).__name__ == "ProcessExitedException" and "terminated with signal SIGTERM" in str(err):
            # a ddp_spawn rank that got the passed-on stop after its run ended (its last.ckpt is saved)
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            return SIGTERMException()
        err = err.__cause__ or err.__context__
    return None


def failure_line(err: BaseException) -> tuple[str, int]:
    """(the one line to print, the exit status) for an expected failure."""
    if isinstance(err, TrainingDiverged):
        return f"Training stopped: {err}", EXIT_DIVERGED
    if type(err).__name__ == "SIGTERMException":
        if last_stop() == signal.SIGINT:
            return ("Stopped by Ctrl-C after saving checkpoints/last.ckpt; continue with resume=true",
                    EXIT_INTERRUPTED)
        return ("Stopped by SIGTERM after saving checkpoints/last.ckpt; continue with resume=true",
                EXIT_SIGTERM)
    if isinstance(err, KeyboardInterrupt):  # the notes say what a training run keeps
        return "; ".join(["Interrupted (Ctrl-C)", *getattr(err, "__notes__", [])]), EXIT_INTERRUPTED
    if isinstance(err, Interrupted):
        return str(err), EXIT_INTERRUPTED
    prefix = "Invalid configuration: " if isinstance(err, ConfigError) else ""
    return prefix + " ".join(str(err).split("\n")), EXIT_USER_ERROR


def full_error_wanted() -> bool:
    """``HYDRA_FULL_ERROR=1``: show tracebacks of expected failures too."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def make_run_folder(folder: Path) -> None:
    """Create this command's run folder (and its parents), remembering which of them did not exist, so that
    a mistake removes exactly what the command created (:func:`remove_unused_run_folder`)."""
    global _run_folder
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    _run_folder = (folder, created[-1] if created else None)


def _another_rank() -> bool:
    """This process is a rank other than 0 of a multi-process run (the rank Lightning set, if it ran)."""
    module = sys.modules.get("lightning_utilities.core.rank_zero")
    return bool(module is not None and getattr(module.rank_zero_only, "rank", 0))


def share_run_folder() -> None:
    """This run has several processes: a Ctrl-C that ends this one leaves the run folder to the others."""
    global _shared_run
    _shared_run = True


def _holds_nothing_of_the_users(folder: Path) -> bool:
    """Only Hydra's record of the command (``.hydra/``), its log (``train.log``, ...), a logger's copy of
    the config, and a W&B run that logged nothing (no ``files/wandb-summary.json``)."""
    wandb_logged = any(folder.glob("wandb/*run-*/files/wandb-summary.json"))
    for root, _, files in os.walk(folder):
        for name in files:
            parts = (Path(root) / name).relative_to(folder).parts
            command_log = len(parts) == 1 and name.endswith(".log")
            record = parts[0] == ".hydra" or name in _RECORD_ONLY or command_log
            if not (record or (parts[0] == "wandb" and not wandb_logged)):
                return False
    return True


def remove_unused_run_folder(folder: Path, created: Path | None = None) -> bool:
    """Remove ``folder`` when it holds nothing of the user's (checkpoints, metrics, logged values), then its
    parents up to ``created`` (the topmost one the command made) while they are empty; True if removed."""
    if not folder.is_dir() or not _holds_nothing_of_the_users(folder):
        return False
    shutil.rmtree(folder)
    if created is not None and created in folder.parents:
        parent = folder.parent
        while parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            if parent == created:
                break
            parent = parent.parent
    return True


def _remove_this_run_folder() -> None:
    """After a mistake: remove the run folder this command made (a sweep's job folders are not made here)."""
    global _run_folder
    if _run_folder is not None:
        remove_unused_run_folder(*_run_folder)
        _run_folder = None


def say(line: str) -> None:
    """The failure's line on stderr, and in the run's log file where Hydra keeps one (``train.log``)."""
    print(line, file=sys.stderr, flush=True)
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def one_line_failures(after: Callable[[int], Any] | None = None) -> Callable[[F], F]:
    """Decorator of every entry point (its ``main`` and its Hydra task): an expected failure ends the
    command with its one line (:func:`say`) and exit status, and a mistake removes the run folder the
    command made; anything else keeps its traceback, and ``HYDRA_FULL_ERROR=1`` prints the traceback of
    an expected failure too. ``after(status)`` runs before the exit; a value it returns is returned instead
    of exiting (a failed job of a sweep, which must not end the others)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from pspl_lightning.cli.lightning_notices import quiet_libraries

            global _run_folder
            quiet_libraries()
            try:
                result = fn(*args, **kwargs)
                _run_folder = None  # a command that ended well keeps its folder, also when called again
                return result
            except (Exception, SystemExit, KeyboardInterrupt) as exc:  # SIGTERMException is a SystemExit
                if type(exc) is SystemExit and not _lightnings_exit_after_ctrl_c(exc):
                    raise  # an exit already decided and said (by an inner entry point)
                err = expected_failure(exc)
                if err is None:
                    raise
                line, status = failure_line(err)
                if full_error_wanted():
                    traceback.print_exc()
                if not (status in (EXIT_INTERRUPTED, EXIT_SIGTERM) and _another_rank()):
                    say(line)  # a stop is said once, by rank 0 (every rank stopped alike)
                if status == EXIT_USER_ERROR or (status == EXIT_INTERRUPTED and not _shared_run):
                    _remove_this_run_folder()  # (a folder other ranks may still write to is left alone)
                instead = after(status) if after is not None else None
                if instead is not None:
                    return instead
                sys.exit(status)

        return wrapper  # type: ignore[return-value]

    return decorate


def _lightnings_exit_after_ctrl_c(exc: SystemExit) -> bool:
    """Lightning ends a run stopped by ``KeyboardInterrupt`` with ``sys.exit(1)``, from inside its handler."""
    return exc.code == 1 and isinstance(exc.__context__, KeyboardInterrupt)


def refuse_moved_keys(overrides: Sequence[str]) -> None:
    """A command-line override of a key that moved is refused with one line naming the new key."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in MOVED_KEYS:
            raise ConfigError(f"{key} moved: use {MOVED_KEYS[key]}")
