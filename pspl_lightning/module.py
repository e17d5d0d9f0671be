"""The LightningModule: an SR network trained with any pixel loss (paced, such as PSPL, or plain), built
from configs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from torch import Tensor, nn
from torchmetrics import MetricCollection

from pspl_lightning.callbacks.guards import kept_checkpoint, refuse_nonfinite_checkpoint
from pspl_lightning.callbacks.pace import Pace
from pspl_lightning.errors import ConfigError, TrainingDiverged
from pspl_lightning.fast_paths import prepare_network
from pspl_lightning.legacy import model_config
from pspl_lightning.loop_state import align_logged_step
from pspl_lightning.losses.paced import PacedLoss
from pspl_lightning.metrics import PSNR, SSIM

log = logging.getLogger("pspl_lightning")

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4, "betas": [0.9, 0.999]}
NO_DECAY = {"_target_": "torch.optim.lr_scheduler.MultiStepLR", "_partial_": True, "milestones": []}


def _plain(cfg: Any) -> Any:
    """A config node as plain data (what a checkpoint stores and ``weights_only`` loading reads back)."""
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


class SRModule(L.LightningModule):
    """Hosts ``net`` (LR -> SR, RGB in [0, 1]) and ``loss(sr, hr)``; validates PSNR/SSIM on Y per set.

    ``net``, ``loss``, ``optimizer`` and ``scheduler`` are configs with ``_target_`` (the optimizer and the
    scheduler ``_partial_``: they get the parameters / the optimizer); they are saved as hyperparameters,
    so ``SRModule.load_from_checkpoint(path)`` rebuilds the module alone. ``net`` and ``loss`` may also be
    modules (then pass them again to ``load_from_checkpoint``). The scheduler steps every optimizer step.
    A warm start (``init_from``) is applied by the entry point, not here. ``run_config`` (the resolved
    run config) is stored in every checkpoint as ``pspl_config``.
    """

    def __init__(
        self,
        net: Mapping[str, Any] | nn.Module,
        loss: Mapping[str, Any] | nn.Module,
        scale: int,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        val_set_names: Sequence[str] = ("val",),
        on_nonfinite: str = "stop",
        channels_last: bool = False,
        compile: bool = False,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"on_nonfinite={on_nonfinite!r} is not allowed: expected 'stop' or 'skip'")
        net, loss = _plain(net), _plain(loss)
        if isinstance(net, Mapping):  # a checkpoint of an older run may hold model.init_from
            net = model_config(net)
        hparams = {"net": net, "loss": loss, "scale": int(scale), "optimizer": _plain(optimizer) or ADAM,
                   "scheduler": _plain(scheduler) or NO_DECAY, "val_set_names": list(val_set_names),
                   "on_nonfinite": on_nonfinite, "channels_last": channels_last, "compile": compile}
        self.save_hyperparameters({k: v for k, v in hparams.items() if not isinstance(v, nn.Module)},
                                  logger=False)  # loggers get the whole run config instead
        if not isinstance(net, nn.Module):
            net = instantiate(net)
        self.net = prepare_network(net, channels_last=channels_last, compile=compile)
        self.loss = loss if isinstance(loss, nn.Module) else instantiate(loss)
        self.scale, self.on_nonfinite = int(scale), on_nonfinite
        self.val_set_names = list(val_set_names)
        self.val_metrics = nn.ModuleDict({
            name: MetricCollection({"psnr_y": PSNR(crop_border=scale), "ssim_y": SSIM(crop_border=scale)})
            for name in self.val_set_names
        })
        self.run_config = _plain(run_config)
        self.last_val_metrics: dict[str, float] = {}
        self._drop_update = False  # on_nonfinite=skip: a batch of this optimizer step had a non-finite loss

    @property
    def plain_net(self) -> nn.Module:
        """The network itself (``net`` may be a ``torch.compile`` wrapper sharing its parameters)."""
        return getattr(self.net, "_orig_mod", self.net)

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(lr)

    def configure_callbacks(self) -> list[Callback]:
        """A paced loss (``sigma_at`` and ``loss_and_weights``, e.g. PSPL) gets its pace callback whatever
        the callbacks config says: the check of sigma over the run and its logging."""
        return [Pace()] if isinstance(self.loss, PacedLoss) else []

    @staticmethod
    def to_float(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """uint8 images (what the datasets yield: 4x fewer bytes to move) -> float in [0, 1], on device."""
        return tuple(t.float().div_(255.0) if t.dtype == torch.uint8 else t for t in batch)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        align_logged_step(self.trainer)  # a resumed run logs at the steps the uninterrupted run logs at

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        lr, hr = self.to_float(batch[:2])
        sr = self.net(lr)
        pace: dict[str, Any] = {}  # a paced loss's sigma and weight map, for the callbacks
        if isinstance(self.loss, PacedLoss):
            pace["sigma"] = self.loss.sigma_at(self.global_step)  # trainer.global_step: exact on resume
            loss, pace["weights"] = self.loss.loss_and_weights(sr, hr, pace["sigma"])
        else:
            loss = self.loss(sr, hr)
        # Agreed across ranks (a rank that skipped alone would hang DDP); one host sync per step.
        finite = bool(torch.isfinite(loss))
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            self._non_finite(loss if not finite else None)  # stops the run unless on_nonfinite=skip
            pace.pop("weights", None)  # sigma moves on; a skipped batch's weights are not shown
            return {**self._skipped_batch(), **pace}
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])  # the rate this step uses
        with torch.no_grad():  # plain L1 as a yardstick comparable across losses
            self.log("train/l1", (sr.detach().float() - hr.float()).abs().mean())
        # the callbacks (pace statistics, image panel) read sigma and the weight map from the step's outputs
        return {"loss": loss, **pace}

    def _non_finite(self, loss: Tensor | None) -> None:
        """Log the skip, or stop the run, for a non-finite loss: ``loss`` is this rank's, None where
        another rank's was."""
        value = "on another rank" if loss is None else float(loss)
        message = f"non-finite training loss {value} at step {self.global_step}"
        if self.on_nonfinite == "skip":
            log.warning("%s: batch skipped (on_nonfinite=skip)", message)
            return
        kept = kept_checkpoint(self._trainer)
        keeps = f"the last good checkpoint is kept: {kept}" if kept else "no checkpoint was written yet"
        raise TrainingDiverged(f"{message}; stopped, {keeps} (on_nonfinite=skip skips such batches instead)")

    def _skipped_batch(self) -> dict[str, Tensor]:
        """What a skipped batch returns: a loss whose gradient is exactly zero and reaches every trainable
        weight. Backward and DDP's gradient all-reduce, which every rank must join, run as usual; the update
        itself is dropped in :meth:`on_before_optimizer_step`. (Lightning refuses the simpler ``return None``
        under DDP.)"""
        self._drop_update = True
        zero = sum((p * 0).sum() for p in self.parameters() if p.requires_grad)
        return {"loss": zero, "skipped": torch.ones((), dtype=torch.bool)}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # A skipped batch drops its optimizer step's whole update (with gradient accumulation, the other
        # batches' too): no gradient at all, so the optimizer changes neither the weights nor its state
        # (Adam's moments and step count). Lightning still counts the step: sigma and the LR move on.
        if self._drop_update:
            optimizer.zero_grad(set_to_none=True)
            self._drop_update = False

    @property
    def eval_net(self) -> nn.Module:
        """The network validation scores (a subclass may score another one, e.g. an EMA copy)."""
        return self.net

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        if len(batch) == 3:  # padding that evens out the ranks' validation shards: not scored
            return
        lr = self.to_float(batch[:1])[0]
        sr = self.eval_net(lr)
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
        optimizer = instantiate(self.hparams.optimizer)(params)
        scheduler = instantiate(self.hparams.scheduler)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # every save, every rank: never a NaN file (the trainer: the message names the checkpoint kept)
        refuse_nonfinite_checkpoint(checkpoint, self.global_step, self._trainer)
        if self.run_config is not None:
            checkpoint["pspl_config"] = self.run_config
