"""The console scripts (``pspl-train``, ``pspl-data``, ...): each imports its command and runs it.

Importing a command takes seconds (torch, Lightning, Hydra); a Ctrl-C then, before the command's own
handling begins, ends with one line too, where Python printed a traceback of the import under way. Once
the command is done, stop signals are ignored while Python exits.
"""

from __future__ import annotations

import importlib
import signal
import sys

from pspl_lightning.launch.stop_requests import ignore_from_now_on

EXIT_INTERRUPTED = 130  # the shell's status for SIGINT (as pspl_lightning.cli.failures says)


def _run(command: str) -> None:
    main = None
    try:
        main = importlib.import_module(f"pspl_lightning.cli.{command}").main
        main()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the line short
        when = " while starting" if main is None else ""
        print(f"pspl-{command}: interrupted (Ctrl-C){when}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        ignore_from_now_on()  # the command ends with the status it decided, whatever comes while Python exits


def train() -> None:
    """``pspl-train``."""
    _run("train")


def evaluate() -> None:
    """``pspl-eval``."""
    _run("eval")


def upscale() -> None:
    """``pspl-upscale``."""
    _run("upscale")


def data() -> None:
    """``pspl-data``."""
    _run("data")


def export() -> None:
    """``pspl-export``."""
    _run("export")
