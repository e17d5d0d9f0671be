"""The project's own error types: mistakes of the user's, each with a message that says what to change.

The entry points print a :class:`UserError` as one line and exit with status 2 (a :class:`TrainingDiverged`
with status 3, an :class:`Interrupted` with 130); anything else is a bug and keeps its traceback. Each user
error is a ``ValueError`` too, for callers that catch that.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the input (config, data, checkpoint); the message names the key or the file."""


class ConfigError(UserError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


class DataError(UserError):
    """A dataset that cannot be used as asked (layout, sizes, too few images); names the folder or file."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset folder or file that does not exist (also a ``FileNotFoundError``)."""


class OutputExistsError(UserError, FileExistsError):
    """An output file or folder that exists and would be replaced (also a ``FileExistsError``)."""


class CheckpointError(UserError):
    """A checkpoint or weights file that cannot be used as asked; names the file and the mismatch."""


class Interrupted(UserError):
    """Ctrl-C during preparation, which keeps what it finished; the message says how to continue (the
    entry points print it and exit with status 130, the shell's for SIGINT)."""


class TrainingDiverged(RuntimeError):
    """A non-finite loss or weight; the message names the step and the value (``pspl-train`` exits with 3)."""


class StopRequested(RuntimeError):
    """A ``ddp_spawn`` rank stopped by SIGTERM/SIGUSR1 after saving: Lightning's ``SIGTERMException`` is a
    ``SystemExit``, which torch's spawn does not report to the waiting process (it then waited for ever)."""
