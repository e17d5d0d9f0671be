"""The GAN LightningModule of real-world SR (Real-ESRGAN's second stage): a generator trained with a pixel
loss (plain or paced, PSPL included), a VGG perceptual loss and an adversarial loss against a U-Net
discriminator, an EMA of the generator, two optimizers under manual optimization."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.core.optimizer import do_nothing_closure
from torch import Tensor, nn

from pspl_lightning.callbacks.guards import refuse_nonfinite_checkpoint
from pspl_lightning.errors import ConfigError
from pspl_lightning.losses.paced import PacedLoss
from pspl_lightning.losses.usm import USMSharp
from pspl_lightning.module import SRModule, _plain

log = logging.getLogger("pspl_lightning")

ADAM_GAN = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4, "betas": [0.9, 0.99]}
# the recipe's keys in the loss node; the rest is the pixel loss
GAN_KEYS = ("pixel_weight", "perceptual", "gan", "gt_usm")


def split_loss_config(loss: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``loss`` as the recipe composes it -> (the pixel loss's config, the GAN keys)."""
    loss = dict(loss)
    return {k: v for k, v in loss.items() if k not in GAN_KEYS}, {k: loss.get(k) for k in GAN_KEYS}


def load_discriminator(net_d: nn.Module, path: str | Path) -> None:
    """Load a discriminator state dict (BasicSR / Real-ESRGAN files hold it under ``params``) strictly."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"init_discriminator_from={path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ConfigError(f"init_discriminator_from={path}: not a weights-only state dict "
                          f"({type(exc).__name__})") from None
    for key in ("params", "params_ema", "state_dict", "net_d"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    try:
        net_d.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    except (RuntimeError, AttributeError) as exc:
        text = " ".join(str(exc).split())[:300]
        raise ConfigError(f"init_discriminator_from={path}: does not fit {type(net_d).__name__} "
                          f"({text})") from None
    log.info("Discriminator weights from %s", path)


class GANModule(SRModule):
    """``net`` (the generator, any SR network), ``discriminator`` (e.g. ``UNetDiscriminatorSN``) and the
    losses of ``loss``: its ``pixel_weight``, ``perceptual`` and ``gan`` entries, the rest being the pixel
    loss's own config (any of ``configs/loss/``), and ``gt_usm`` (pixel and perceptual terms against the
    unsharp-masked HR). Real-ESRGAN's step: the generator's update with
    ``pixel_weight * pixel + perceptual + gan`` (the discriminator frozen), then the discriminator's on
    real HR and detached SR; then the EMA of the generator (``ema_decay``; 0 keeps none), which validation,
    checkpoint selection and pspl-export/-upscale/-eval use.

    Steps: only the generator's update goes through Lightning's step counter; the discriminator's goes
    through ``trainer.strategy.optimizer_step`` (precision plugin, gradient scaler and hooks as usual, not
    counted), so ``trainer.global_step``, ``trainer.max_steps`` and every step-based guard count generator
    steps. The module counts both updates itself (``generator_steps``, ``discriminator_steps``, stored in
    every checkpoint as ``gan_steps``) and a paced loss's sigma follows ``generator_steps``.
    """

    def __init__(
        self,
        net: Mapping[str, Any] | nn.Module,
        loss: Mapping[str, Any],
        scale: int,
        discriminator: Mapping[str, Any] | nn.Module,
        optimizer: Mapping[str, Any] | None = None,
        optimizer_d: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        ema_decay: float = 0.999,
        discriminator_weights: str | None = None,
        val_set_names: Sequence[str] = ("val",),
        on_nonfinite: str = "stop",
        channels_last: bool = False,
        compile: bool = False,
        run_config: dict[str, Any] | None = None,
        perceptual: nn.Module | None = None,
    ) -> None:
        loss = _plain(loss)
        if not isinstance(loss, Mapping):
            raise ConfigError("loss must be a config node: the pixel loss and pixel_weight/perceptual/gan")
        pixel, gan_cfg = split_loss_config(loss)
        if gan_cfg["gan"] is None:
            raise ConfigError("loss.gan is missing: recipe=realesrgan sets it (type: vanilla|hinge, weight)")
        if not 0 <= float(ema_decay) < 1:
            raise ConfigError(f"module.ema_decay={ema_decay} is not allowed: expected a number in [0, 1)")
        super().__init__(net=net, loss=pixel, scale=scale, optimizer=optimizer or ADAM_GAN,
                         scheduler=scheduler, val_set_names=val_set_names, on_nonfinite=on_nonfinite,
                         channels_last=channels_last, compile=compile, run_config=run_config)
        self.automatic_optimization = False
        disc = _plain(discriminator)
        hparams = {**self.hparams, "loss": loss, "discriminator": disc,
                   "optimizer_d": _plain(optimizer_d) or ADAM_GAN, "ema_decay": float(ema_decay)}
        self.save_hyperparameters({k: v for k, v in hparams.items() if not isinstance(v, nn.Module)},
                                  logger=False)
        self.net_d = disc if isinstance(disc, nn.Module) else instantiate(disc)
        if discriminator_weights:
            load_discriminator(self.net_d, discriminator_weights)
        self.pixel_weight = float(gan_cfg["pixel_weight"] if gan_cfg["pixel_weight"] is not None else 1.0)
        if perceptual is None and gan_cfg["perceptual"] is not None:
            perceptual = instantiate(gan_cfg["perceptual"])
        self.perceptual = perceptual
        self.gan = instantiate(gan_cfg["gan"])
        self.usm = USMSharp() if gan_cfg["gt_usm"] else None  # Real-ESRGAN: pixel/perceptual on sharpened HR
        self.ema_decay = float(ema_decay)
        self.net_ema = None
        if self.ema_decay > 0:
            self.net_ema = copy.deepcopy(self.plain_net)
            for p in self.net_ema.parameters():
                p.requires_grad_(False)
        self.generator_steps = 0
        self.discriminator_steps = 0

    @property
    def eval_net(self) -> nn.Module:
        """What validation and inference use: the EMA generator, or the generator without one."""
        return self.net_ema if self.net_ema is not None else self.net

    def on_fit_start(self) -> None:
        if self.generator_steps == 0 and self.net_ema is not None:
            self.sync_ema()  # after a warm start (init_from), as Real-ESRGAN's model_ema(decay=0)

    @torch.no_grad()
    def sync_ema(self, decay: float = 0.0) -> None:
        """``ema = decay * ema + (1 - decay) * net`` for the parameters (BasicSR's arithmetic); buffers are
        copied."""
        ema, net = self.net_ema, self.plain_net
        params = dict(net.named_parameters())
        for name, p in ema.named_parameters():
            p.mul_(decay).add_(params[name].detach(), alpha=1 - decay)
        buffers = dict(net.named_buffers())
        for name, b in ema.named_buffers():
            b.copy_(buffers[name])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        if self.generator_steps != self.global_step:  # the invariant the pace and the guards rely on
            raise RuntimeError(f"generator steps {self.generator_steps} != trainer.global_step "
                               f"{self.global_step}: the step counting of GANModule is broken")
        opt_g, opt_d = self.optimizers()
        sch_g, sch_d = self.lr_schedulers()
        lr, hr = self.to_float(batch[:2])
        out: dict[str, Any] = {}

        # generator: pixel + perceptual + adversarial, the discriminator frozen
        self.net_d.requires_grad_(False)
        sr = self.net(lr)
        hr_px = self.usm(hr) if self.usm is not None else hr  # the pixel and perceptual terms' target
        if isinstance(self.loss, PacedLoss):
            out["sigma"] = self.loss.sigma_at(self.generator_steps)  # exact on resume: stored in checkpoints
            l_pix, out["weights"] = self.loss.loss_and_weights(sr, hr_px, out["sigma"])
        else:
            l_pix = self.loss(sr, hr_px)
        l_pix = l_pix * self.pixel_weight
        l_per = self.perceptual(sr, hr_px) if self.perceptual is not None else sr.new_zeros(())
        l_gan = self.gan.generator(self.net_d(sr))
        loss_g = l_pix + l_per + l_gan
        finite_g = bool(torch.isfinite(loss_g))
        ok_g = self.trainer.strategy.reduce_boolean_decision(finite_g, all=True)
        if not ok_g:
            self._non_finite(loss_g if not finite_g else None)  # stops the run unless on_nonfinite=skip
        self._update(opt_g, loss_g if ok_g else self._zero_loss(self.net), ok_g, counted=True)
        self.net_d.requires_grad_(True)
        sch_g.step()
        self.generator_steps += 1
        if self.net_ema is not None:
            self.sync_ema(self.ema_decay)

        # discriminator: real HR and the detached SR
        real = self.net_d(hr)
        fake = self.net_d(sr.detach())
        loss_d = self.gan.discriminator(real, True) + self.gan.discriminator(fake, False)
        finite_d = bool(torch.isfinite(loss_d))
        ok_d = self.trainer.strategy.reduce_boolean_decision(finite_d, all=True)
        if not ok_d:
            self._non_finite(loss_d if not finite_d else None)
        self._update(opt_d, loss_d if ok_d else self._zero_loss(self.net_d), ok_d, counted=False)
        sch_d.step()
        self.discriminator_steps += 1

        if ok_g and ok_d:
            logs = {"train/loss_g": loss_g, "train/loss_d": loss_d, "train/loss_pixel": l_pix,
                    "train/loss_perceptual": l_per, "train/loss_gan": l_gan,
                    "train/d_real": real.detach().mean(), "train/d_fake": fake.detach().mean()}
            self.log_dict({k: v.detach() for k, v in logs.items()})
            self.log("train/loss", loss_g.detach(), prog_bar=True)
            self.log("train/lr", opt_g.param_groups[0]["lr"])
        else:
            out.pop("weights", None)
        return {"loss": loss_g.detach(), **out}

    def _zero_loss(self, net: nn.Module) -> Tensor:
        """A loss with a zero gradient reaching every trainable weight of ``net`` (DDP needs every rank's
        backward); the update is dropped in :meth:`_update`."""
        return sum((p * 0).sum() for p in net.parameters() if p.requires_grad)

    def _update(self, opt: Any, loss: Tensor, ok: bool, counted: bool) -> None:
        """Backward and step ``opt``; a skipped batch (``ok`` False) steps with no gradient (no change).
        ``counted``: through Lightning's optimizer (counted in ``global_step``), else through the strategy."""
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if not ok:
            opt.zero_grad(set_to_none=True)
        if counted:
            opt.step()
        else:
            self.trainer.strategy.optimizer_step(opt.optimizer, do_nothing_closure)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        pass  # skipped batches are handled in _update

    def configure_optimizers(self) -> list[dict[str, Any]]:
        def one(params: list[nn.Parameter], opt_cfg: Any) -> dict[str, Any]:
            opt = instantiate(opt_cfg)(params)
            return {"optimizer": opt, "lr_scheduler": instantiate(self.hparams.scheduler)(opt)}

        return [one([p for p in self.net.parameters() if p.requires_grad], self.hparams.optimizer),
                one(list(self.net_d.parameters()), self.hparams.optimizer_d)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        refuse_nonfinite_checkpoint(checkpoint, self.global_step, self._trainer)
        checkpoint["gan_steps"] = {"generator": self.generator_steps,
                                   "discriminator": self.discriminator_steps}
        if self.run_config is not None:
            checkpoint["pspl_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        steps = checkpoint.get("gan_steps")
        if steps is None:
            raise ConfigError("the checkpoint holds no gan_steps: not a checkpoint of recipe=realesrgan "
                              "(start from a PSNR-trained one with init_from=<file> instead)")
        self.generator_steps, self.discriminator_steps = int(steps["generator"]), int(steps["discriminator"])
