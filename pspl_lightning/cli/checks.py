"""Checks run on the composed config before any work, so mistakes fail in the first second."""

from __future__ import annotations

from omegaconf import DictConfig

from pspl_lightning.losses.pspl import check_pace


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


def _is_pspl(loss_cfg: DictConfig) -> bool:
    return str(loss_cfg.get("_target_", "")).endswith("PSPLLoss")


def check_train_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for a config that would fail or silently misbehave during training."""
    max_steps = int(cfg.trainer.get("max_steps", -1) or -1)
    if max_steps <= 0:
        raise ConfigError(f"trainer.max_steps must be a positive number of steps, got {max_steps}")
    if _is_pspl(cfg.loss):
        try:
            check_pace(float(cfg.loss.alpha), float(cfg.loss.beta), int(cfg.loss.step_unit), max_steps)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    scale = cfg.data.get("scale")
    if scale not in (2, 3, 4):
        raise ConfigError(f"data.scale must be 2, 3 or 4, got {scale!r}")
    patch = cfg.data.get("patch_size")
    if patch is not None and int(patch) % int(scale):
        raise ConfigError(f"data.patch_size={patch} must be divisible by data.scale={scale}")
    late = [m for m in cfg.schedule.get("lr_milestones", []) if int(m) >= max_steps]
    if late:
        raise ConfigError(
            f"schedule.lr_milestones {list(late)} are at or beyond trainer.max_steps={max_steps}: they would "
            f"never apply; lower them or raise the step count"
        )
