"""The config rules of GAN training (``recipe=realesrgan``), checked before torch is imported: the
perceptual loss's VGG19 weights at hand, and the Trainer options manual optimization cannot honour."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pspl_lightning.errors import ConfigError
from pspl_lightning.vgg_weights import resolve_vgg19_weights


def is_gan_config(cfg: DictConfig) -> bool:
    """True for a run of the GAN module (the recipe sets ``module._target_``)."""
    return str(OmegaConf.select(cfg, "module._target_", default="")).endswith("GANModule")


def check_gan_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the key for a GAN config that cannot train as asked."""
    if not is_gan_config(cfg):
        return
    perceptual = OmegaConf.select(cfg, "loss.perceptual", default=None)
    if perceptual is not None:
        resolve_vgg19_weights(perceptual.get("weights"))
    disc_init = OmegaConf.select(cfg, "init_discriminator_from", default=None)
    if disc_init is not None and not Path(str(disc_init)).is_file():
        raise ConfigError(f"init_discriminator_from={disc_init}: no such file")
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1)
    if accumulate != 1:
        raise ConfigError(f"trainer.accumulate_grad_batches={accumulate} is not supported with "
                          f"recipe=realesrgan (two optimizers, manual optimization): use 1")
    clip = OmegaConf.select(cfg, "trainer.gradient_clip_val", default=None)
    if clip is not None:
        raise ConfigError(f"trainer.gradient_clip_val={clip} is not supported with recipe=realesrgan "
                          f"(Lightning clips only under automatic optimization): use null")
    strategy = OmegaConf.select(cfg, "trainer.strategy", default=None)
    if strategy in ("ddp", "ddp_spawn"):  # each backward leaves the frozen network without gradients
        raise ConfigError(f"trainer.strategy={strategy} cannot train recipe=realesrgan: each update leaves "
                          f"the other network without gradients; use trainer.strategy={strategy}"
                          f"_find_unused_parameters_true")
    if OmegaConf.select(cfg, "callbacks.ema", default=None) is not None:
        raise ConfigError("callbacks.ema would average the discriminator too: recipe=realesrgan keeps "
                          "its own EMA of the generator (module.ema_decay); drop callbacks=ema")
    patch = OmegaConf.select(cfg, "data.patch_size", default=None)
    if isinstance(patch, int) and patch % 8:
        raise ConfigError(f"data.patch_size={patch} must be divisible by 8: the U-Net discriminator halves "
                          f"the HR patch three times")
