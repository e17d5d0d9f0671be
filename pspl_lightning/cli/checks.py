"""Checks run on the composed config before any work, so mistakes fail in the first second.

Hydra already rejects unknown keys (configs are in struct mode: ``loss.alpah=1`` fails with "Key
'alpah' is not in struct"); these rules catch wrong types and values out of range, each with one
message naming the key, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pspl_lightning.losses.base import BASE_LOSSES
from pspl_lightning.losses.pspl import SSIM_MODES, check_pace


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# key -> (is the type right, is the value allowed, what is allowed); keys absent from a config are skipped
RULES: dict[str, tuple[Callable[[Any], bool], Callable[[Any], bool], str]] = {
    "trainer.max_steps": (_is_int, lambda v: v > 0, "a positive number of optimizer steps"),
    "data.scale": (_is_int, lambda v: v in (2, 3, 4), "2, 3 or 4"),
    "data.patch_size": (_is_int, lambda v: v > 0, "a positive HR patch side in pixels"),
    "data.batch_size": (_is_int, lambda v: v >= 1, "an integer >= 1"),
    "data.repeat": (_is_int, lambda v: v >= 1, "an integer >= 1"),
    "data.num_workers": (_is_int, lambda v: v >= 0, "an integer >= 0"),
    "optimizer.lr": (_is_number, lambda v: v > 0, "a learning rate > 0"),
    "schedule.lr_gamma": (_is_number, lambda v: 0 < v <= 1, "a factor in (0, 1]"),
    "on_nonfinite": (lambda v: isinstance(v, str), lambda v: v in ("stop", "skip"), "'stop' or 'skip'"),
}
PSPL_RULES: dict[str, tuple[Callable[[Any], bool], Callable[[Any], bool], str]] = {
    "loss.alpha": (_is_number, lambda v: True, "a number"),
    "loss.beta": (_is_number, lambda v: True, "a number"),
    "loss.max_weight": (_is_number, lambda v: v > 0, "a weight > 0"),
    "loss.step_unit": (_is_int, lambda v: v > 0, "a positive number of steps"),
    "loss.base": (lambda v: isinstance(v, str), lambda v: v in BASE_LOSSES, f"one of {sorted(BASE_LOSSES)}"),
    "loss.ssim_mode": (lambda v: isinstance(v, str), lambda v: v in SSIM_MODES, f"one of {list(SSIM_MODES)}"),
}


def _check_rules(cfg: DictConfig, rules: dict) -> None:
    for key, (type_ok, value_ok, allowed) in rules.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None and OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue
        if not (type_ok(value) and value_ok(value)):
            raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


def check_train_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for a config that would fail or silently misbehave during training."""
    _check_rules(cfg, RULES)
    max_steps, scale = cfg.trainer.max_steps, cfg.data.scale
    if cfg.data.patch_size % scale:
        raise ConfigError(f"data.patch_size={cfg.data.patch_size} must be divisible by data.scale={scale}")
    model_scale = OmegaConf.select(cfg, "model.scale", default=scale)
    if model_scale != scale:
        raise ConfigError(f"model.scale={model_scale} differs from data.scale={scale}: leave model.scale at "
                          f"its default (${{data.scale}})")
    if str(cfg.loss.get("_target_", "")).endswith("PSPLLoss"):
        _check_rules(cfg, PSPL_RULES)
        try:
            check_pace(cfg.loss.alpha, cfg.loss.beta, cfg.loss.step_unit, max_steps)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    milestones = list(cfg.schedule.get("lr_milestones") or [])
    if not all(_is_int(m) and m > 0 for m in milestones) or milestones != sorted(milestones):
        raise ConfigError(
            f"schedule.lr_milestones={milestones} is not allowed: expected increasing step numbers"
        )
    late = [m for m in milestones if m >= max_steps]
    if late:
        raise ConfigError(
            f"schedule.lr_milestones {late} are at or beyond trainer.max_steps={max_steps}: they would "
            f"never apply; lower them or raise the step count"
        )
    init_from = OmegaConf.select(cfg, "model.init_from", default=None)
    if init_from is not None and not (cfg.get("resume") or cfg.get("ckpt_path")):
        if str(init_from).startswith("???"):
            raise ConfigError(f"model.init_from is required by this experiment: {str(init_from)[3:].strip()}")
        if not Path(str(init_from)).is_file():
            raise ConfigError(f"model.init_from={init_from}: no such checkpoint or weights file")
    root = cfg.data.get("root")
    is_sample = str(cfg.data.get("_target_", "")).endswith("SampleDataModule")  # built on first use
    if root is not None and not is_sample and not Path(str(root)).is_dir():
        raise ConfigError(f"data.root={root} does not exist: point it at your dataset folder "
                          f"(layouts in docs/DATA.md)")
