"""Logger variants: CSV that keeps what a resumed run already wrote, W&B without a stale setting."""

from __future__ import annotations

import csv
import logging
import os
from typing import Any

from lightning.fabric.loggers.csv_logs import _ExperimentWriter as _FabricWriter
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

log = logging.getLogger("pspl_lightning")


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
    """``lightning.pytorch.loggers.WandbLogger`` that says what a user needs and nothing else: an offline run
    prints one line, where it is and how to upload it (wandb's own 30-odd lines of history, summary and
    hints are silenced), an online run only wandb's essential lines (``quiet``). Without the ``anonymous``
    setting, which Lightning always passes to ``wandb.init`` and wandb only answers with a warning."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)
        if "settings" not in self._wandb_init:
            import wandb

            self._wandb_init["settings"] = wandb.Settings(silent=True) if self._offline \
                else wandb.Settings(quiet=True)

    @property
    def experiment(self) -> Any:
        fresh = self._experiment is None
        run = super().experiment
        if fresh and getattr(run, "offline", False):  # Lightning asks for mode "dryrun": wandb's offline
            log.info("W&B run saved offline in %s; upload it with: wandb sync %s", run.settings.sync_dir,
                     run.settings.sync_dir)
        return run
