"""The progress bar: Lightning's Rich bar with readable metrics, titled "Epoch N" when bounded by steps."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import RichProgressBarTheme


class ProgressBar(RichProgressBar):
    """Rich's bar without the logger's version (``v_num: csv`` says nothing about training) and with the
    metrics in 4 significant digits: PSPL's early loss is about 1e-4, which 3 decimals show as 0.000.
    Lightning titles it "Epoch N/<max_epochs - 1>", which reads "Epoch 0/-2" when training is bounded by
    ``max_steps`` (max_epochs -1, as every config here is); then the title is "Epoch N" alone."""

    def __init__(self, *args: Any, theme: RichProgressBarTheme | None = None, **kwargs: Any) -> None:
        super().__init__(*args, theme=theme or RichProgressBarTheme(metrics_format=".4g"), **kwargs)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs >= 1:
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"  # padded as Lightning pads
