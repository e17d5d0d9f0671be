"""The PSPL pace: sets the loss's sigma from ``trainer.global_step`` before every training step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from pspl_lightning.losses.pspl import PSPLLoss
from pspl_lightning.pace import check_pace


class PSPLPace(Callback):
    """Sets ``sigma = alpha * (global_step + 1) / step_unit + beta`` on ``pl_module.loss`` and logs it.

    Sigma is a pure function of the global step (identical on every rank, exact on resume). Also logs
    the mean/min/max of the step's weight map, which the training step returns as ``outputs["weights"]``.
    :class:`~pspl_lightning.module.SRModule` attaches this callback itself when its loss is PSPL.
    """

    def __init__(self, loss_attr: str = "loss") -> None:
        self.loss_attr = loss_attr

    def _loss(self, pl_module: L.LightningModule) -> PSPLLoss | None:
        loss = getattr(pl_module, self.loss_attr, None)
        return loss if isinstance(loss, PSPLLoss) else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loss = self._loss(pl_module)
        if loss is not None and stage == "fit":
            max_steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
            check_pace(loss.alpha, loss.beta, loss.step_unit, max_steps)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        loss = self._loss(pl_module)
        if loss is not None:
            loss.set_step(trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = self._loss(pl_module)
        if loss is None or loss.sigma is None:
            return
        pl_module.log("pspl/sigma", loss.sigma)
        w = step_weights(outputs)
        if w is not None:
            pl_module.log_dict({"pspl/weight_mean": w.mean(), "pspl/weight_min": w.min(),
                                "pspl/weight_max": w.max()})


def step_weights(outputs: Any) -> Tensor | None:
    """The PSPL weight map a training step returned (``outputs["weights"]``), or None."""
    return outputs.get("weights") if isinstance(outputs, Mapping) else None
