"""Checkpoint files: atomic writes and finding the checkpoint a resumed run continues from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from pspl_lightning.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place.

    Lightning's own writer streams into the final path, so a job killed while saving leaves a torn
    ``last.ckpt`` and loses the previous good one; a rename is atomic on POSIX file systems.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def run_checkpoint(run_dir: Path) -> Path | None:
    """The newest of a run folder's ``checkpoints/last.ckpt`` and SLURM ``hpc_ckpt_*.ckpt`` files."""
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def latest_run(runs_dir: Path, exclude: Path | None = None) -> tuple[Path, Path]:
    """The most recently written run folder under ``runs_dir`` holding a checkpoint, and the checkpoint."""
    found = []
    if runs_dir.is_dir():
        for run in runs_dir.iterdir():
            if run.is_dir() and (exclude is None or run.resolve() != exclude.resolve()):
                ckpt = run_checkpoint(run)
                if ckpt is not None:
                    found.append((ckpt.stat().st_mtime, run, ckpt))
    if not found:
        raise FileNotFoundError(
            f"resume=true: no run folder under {runs_dir} holds checkpoints/last.ckpt; pass "
            f"resume=<run folder> or ckpt_path=<file>"
        )
    _, run, ckpt = max(found)
    return run, ckpt
