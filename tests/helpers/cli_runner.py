"""Run many ``pspl-*`` command lines, each in a process of its own, paying the heavy imports once.

``python -m tests.helpers.cli_runner <cases.json>``: this process imports torch, Lightning, Hydra and the
entry points, then forks one child per case. A child changes to the case's folder, takes its environment,
sends stdout and stderr to the case's ``out`` file, sets ``sys.argv`` and calls the entry point's
``main()``, as the console script does; its exit status is the command's. Each case is still a separate
process with its own Hydra and logging state, but costs only its own work instead of 5-7 s of imports (the
tests of every user mistake run this way). Writes ``{name: exit status}`` to ``<cases.json>.status``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

ENTRY_POINTS = ("train", "eval", "upscale", "data", "export")


def _child(case: dict) -> None:
    """Run one case in this (forked) process; never returns."""
    code = 1
    try:
        os.chdir(case["cwd"])
        os.environ.clear()
        os.environ.update(case["env"])
        fd = os.open(case["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.argv = [f"pspl-{case['entry']}", *case["args"]]
        try:
            importlib.import_module(f"pspl_lightning.cli.{case['entry']}").main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter would print for an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(cases_file: str, parallel: int = 2) -> None:
    """Fork the cases, ``parallel`` at a time, and record their exit statuses."""
    import lightning  # noqa: F401  - the heavy imports, once, before any fork
    import torch  # noqa: F401

    for entry in ENTRY_POINTS:
        importlib.import_module(f"pspl_lightning.cli.{entry}")
    importlib.import_module("pspl_lightning.cli.build")
    cases = json.loads(Path(cases_file).read_text())
    pending, running, status = list(cases.items()), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            name, case = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(case)
            running[pid] = name
        pid, wait_status = os.wait()
        status[running.pop(pid)] = os.waitstatus_to_exitcode(wait_status)
    Path(f"{cases_file}.status").write_text(json.dumps(status))


if __name__ == "__main__":
    main(sys.argv[1])
