"""The loggers' history of a resumed run equals the uninterrupted run's: no duplicated or missing step."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class LoggedHistory(Callback):
    """Tells every logger that can keep its history exact (``checkpointed`` / ``rewind``, e.g.
    :class:`pspl_lightning.loggers.CSVLogger`) where each checkpoint is and where a resumed run starts.

    A run killed after its last checkpoint (SIGKILL, a node failure, out of memory) had logged steps the
    resumed run logs again (CSV held steps 30-35 twice), and rows still buffered when it was killed were
    lost; the checkpoint's step tells both apart.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if hasattr(logger, "checkpointed"):
                logger.checkpointed(int(checkpoint.get("global_step", trainer.global_step)))

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if hasattr(logger, "rewind"):
                logger.rewind(int(checkpoint["global_step"]))
