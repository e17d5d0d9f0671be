"""Atomic checkpoint writes (Lightning's checkpoint IO plugin)."""

from __future__ import annotations

import os
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
