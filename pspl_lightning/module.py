"""The LightningModule: an SR network trained with any pixel loss (PSPL or plain), Adam and step-wise LR."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection

from pspl_lightning.callbacks.guards import TrainingDiverged
from pspl_lightning.metrics import PSNR, SSIM

log = logging.getLogger("pspl_lightning")


class SRModule(L.LightningModule):
    """Hosts ``net`` (LR -> SR, RGB in [0, 1]) and ``loss(sr, hr)``; validates PSNR/SSIM on Y per set.

    ``optimizer`` builds the optimizer from the parameters (a Hydra ``_partial_``); the default is Adam
    with lr 1e-4, betas (0.9, 0.999). The LR is multiplied by ``lr_gamma`` at each step in
    ``lr_milestones`` (optimizer steps). ``run_config`` (the resolved run config) is stored in every
    checkpoint so that evaluation tools can rebuild the network.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        scale: int,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer] | None = None,
        lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.5,
        val_set_names: Sequence[str] = ("val",),
        run_config: dict[str, Any] | None = None,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.net, self.loss, self.scale = net, loss, scale
        self.optimizer_factory = optimizer
        self.lr_milestones, self.lr_gamma = sorted(int(m) for m in lr_milestones), lr_gamma
        self.val_set_names = list(val_set_names)
        self.val_metrics = nn.ModuleDict({
            name: MetricCollection({"psnr_y": PSNR(crop_border=scale), "ssim_y": SSIM(crop_border=scale)})
            for name in self.val_set_names
        })
        self.run_config = run_config
        self.last_val_metrics: dict[str, float] = {}

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(lr)

    @staticmethod
    def to_float(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """uint8 images (what the datasets yield: 4x fewer bytes to move) -> float in [0, 1], on device."""
        return tuple(t.float().div_(255.0) if t.dtype == torch.uint8 else t for t in batch)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        lr, hr = self.to_float(batch)
        sr = self.net(lr)
        loss = self.loss(sr, hr)
        # Agreed across ranks (a rank that skipped alone would hang DDP); one host sync per step.
        if not self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True):
            return self._non_finite(loss)
        self.log("train/loss", loss, prog_bar=True)
        with torch.no_grad():  # plain L1 as a yardstick comparable across losses
            self.log("train/l1", (sr.detach().float() - hr.float()).abs().mean())
        return loss

    def _non_finite(self, loss: Tensor) -> None:
        message = f"non-finite training loss {float(loss)} at step {self.global_step}"
        if self.on_nonfinite == "skip":
            log.warning("%s: batch skipped (on_nonfinite=skip)", message)
            return None
        raise TrainingDiverged(
            f"{message}; stopped, the last good checkpoint is kept in the run's checkpoints/ folder "
            f"(on_nonfinite=skip skips such batches instead)"
        )

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        if len(batch) == 3:  # padding that evens out the ranks' validation shards: not scored
            return
        lr = self.to_float(batch[:1])[0]
        sr = self.net(lr)
        # HR as stored (uint8): the metrics read it exactly, as pspl-eval does
        self.val_metrics[self.val_set_names[dataloader_idx]].update(sr.float(), batch[1])

    def on_validation_epoch_end(self) -> None:
        values: dict[str, float] = {}
        for i, (name, metrics) in enumerate(self.val_metrics.items()):
            for key, value in metrics.compute().items():
                values[f"val/{name}/{key}"] = float(value)
                if i == 0:  # the first set is the primary one: val/psnr_y drives checkpoint selection
                    values[f"val/{key}"] = float(value)
            metrics.reset()
        # Already synced by torchmetrics; sync_dist only averages equal values (and silences Lightning).
        for key, value in values.items():
            self.log(key, value, prog_bar=key == "val/psnr_y", add_dataloader_idx=False, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.last_val_metrics = values

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.net.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.999))
        else:
            optimizer = self.optimizer_factory(params)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, self.lr_milestones, self.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["pspl_config"] = self.run_config
