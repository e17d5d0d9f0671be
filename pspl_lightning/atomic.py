"""Atomic file writes: nothing a user keeps is ever left half-written."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary name next to ``path`` to write to; rename it over ``path`` when the block succeeds.

    The name is unique per process and call (two writers never share it) and is removed on failure, so
    ``path`` holds either its old content or the complete new one: a rename is atomic on POSIX systems.
    ``keep_suffix``: the temporary name ends in ``path``'s suffix (for readers that pick a format by it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = path.with_name(f".{path.stem}.{tag}.tmp{path.suffix}" if keep_suffix else f".{path.name}.{tag}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
