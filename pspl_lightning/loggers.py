"""Logger variants: CSV that keeps what a resumed run already wrote, W&B without a stale setting."""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.fabric.loggers.csv_logs import _ExperimentWriter as _FabricWriter
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; this one appends to it instead."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to the run's ``metrics.csv`` on resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _FabricWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class WandbLogger(_LightningWandbLogger):
    """``lightning.pytorch.loggers.WandbLogger`` without the ``anonymous`` setting, which Lightning always
    passes to ``wandb.init`` and which wandb only answers with a warning that it has no effect."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)
