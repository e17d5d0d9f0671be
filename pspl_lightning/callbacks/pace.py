"""The pace of a paced loss: its sigma checked over the run, and logged with the weights at every step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from pspl_lightning.losses.paced import PacedLoss, check_run


class Pace(Callback):
    """For a paced loss (:class:`~pspl_lightning.losses.paced.PacedLoss`, e.g. PSPL): checks at fit start
    that sigma stays valid for ``trainer.max_steps``, and logs ``pspl/sigma`` and the mean/min/max of the
    step's weight map, which the training step returns (``outputs["sigma"]``, ``outputs["weights"]``).

    The training step takes sigma from ``trainer.global_step`` (identical on every rank, exact on resume).
    :class:`~pspl_lightning.module.SRModule` attaches this callback itself when its loss is paced.
    """

    def __init__(self, loss_attr: str = "loss") -> None:
        self.loss_attr = loss_attr

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loss = getattr(pl_module, self.loss_attr, None)
        if isinstance(loss, PacedLoss) and stage == "fit":
            check_run(loss, trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        sigma = outputs.get("sigma") if isinstance(outputs, Mapping) else None
        if sigma is None:
            return
        pl_module.log("pspl/sigma", float(sigma))
        w = step_weights(outputs)
        if w is not None:
            pl_module.log_dict({"pspl/weight_mean": w.mean(), "pspl/weight_min": w.min(),
                                "pspl/weight_max": w.max()})


def step_weights(outputs: Any) -> Tensor | None:
    """The weight map a paced loss's training step returned (``outputs["weights"]``), or None."""
    return outputs.get("weights") if isinstance(outputs, Mapping) else None
