"""The config rules that span several keys, checked before anything heavy is imported or built.

Single values are checked where they are used: each constructor (network, loss, DataModule, module)
validates its own arguments and raises :class:`~pspl_lightning.errors.ConfigError` naming the key. What
no single constructor can see lives here: sigma over the whole run, milestones inside the run, the patch
against the scale, a warm start the experiment requires, and the values that third-party classes take
without naming the key (``trainer.max_steps``, ``optimizer.lr``, ``schedule.lr_gamma``).
Hydra already rejects unknown keys (configs are in struct mode: ``loss.alpah=1`` fails).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from pspl_lightning.errors import ConfigError
from pspl_lightning.gan_config import check_gan_config
from pspl_lightning.pace import check_pace


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _require(key: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


def _set_at(cfg: DictConfig, key: str) -> str:
    """The key a user set for ``key``: the key it interpolates when it is ``${other.key}``
    (``trainer.max_steps`` follows ``schedule.max_steps``), else ``key`` itself."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    raw = OmegaConf.to_container(node, resolve=False).get(leaf) if isinstance(node, DictConfig) else None
    if isinstance(raw, str) and re.fullmatch(r"\$\{[\w.]+\}", raw):
        return _set_at(cfg, raw[2:-1])
    return key


def check_train_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for a config that would fail or silently misbehave during training."""
    max_steps = cfg.trainer.max_steps
    _require(_set_at(cfg, "trainer.max_steps"), max_steps, _is_int(max_steps) and max_steps > 0,
             "a positive number of optimizer steps")
    lr = OmegaConf.select(cfg, "optimizer.lr", default=1.0)
    _require("optimizer.lr", lr, _is_number(lr) and 0 < lr < math.inf, "a learning rate > 0 (finite)")
    gamma = cfg.schedule.lr_gamma
    _require("schedule.lr_gamma", gamma, _is_number(gamma) and 0 < gamma <= 1, "a factor in (0, 1]")
    scale, patch = cfg.data.scale, cfg.data.patch_size
    if _is_int(scale) and _is_int(patch) and scale > 0 and patch % scale:
        raise ConfigError(f"data.patch_size={patch} must be divisible by data.scale={scale}")
    model_scale = OmegaConf.select(cfg, "model.scale", default=scale)
    if model_scale != scale:
        raise ConfigError(f"model.scale={model_scale} differs from data.scale={scale}: leave model.scale at "
                          f"its default (${{data.scale}})")
    # A loss on the linear pace (pace.py: loss.alpha, loss.beta, loss.step_unit; PSPL's) is checked here,
    # before the heavy imports; any paced loss is checked again by the pace callback when fitting starts.
    alpha, beta, unit = (cfg.loss.get(key) for key in ("alpha", "beta", "step_unit"))
    if _is_number(alpha) and _is_number(beta) and _is_int(unit):  # else the loss names the bad key
        check_pace(alpha, beta, unit, max_steps)
    _check_milestones(list(cfg.schedule.get("lr_milestones") or []), max_steps)
    _check_init_from(cfg)
    check_gan_config(cfg)  # recipe=realesrgan: VGG weights at hand, what manual optimization allows
    root = cfg.data.get("root")
    is_sample = str(cfg.data.get("_target_", "")).endswith("SampleDataModule")  # built on first use
    if root is not None and not is_sample and not Path(str(root)).is_dir():
        raise ConfigError(f"data.root={root} does not exist: point it at your dataset folder "
                          f"(layouts in docs/DATA.md)")


def _check_milestones(milestones: list[Any], max_steps: int) -> None:
    if not all(_is_int(m) and m > 0 for m in milestones) or milestones != sorted(milestones):
        raise ConfigError(
            f"schedule.lr_milestones={milestones} is not allowed: expected increasing step numbers"
        )
    late = [m for m in milestones if m >= max_steps]
    if late:
        raise ConfigError(
            f"schedule.lr_milestones {late} are at or beyond trainer.max_steps={max_steps}: they would "
            f"never apply; lower them or raise the step count (to smoke-test a preset: debug=fast)"
        )


def _check_init_from(cfg: DictConfig) -> None:
    """A preset's required warm start (``???``) must be given; a given file must exist (not on resume)."""
    if cfg.get("resume") or cfg.get("ckpt_path"):
        return
    try:
        init_from = cfg.get("init_from")
    except (MissingMandatoryValue, InterpolationToMissingValueError):  # a preset's ???
        raise ConfigError("init_from is required by this experiment: set init_from=<x2 run "
                          "folder>/checkpoints/last.ckpt (or null to train from scratch)") from None
    if init_from is not None and not Path(str(init_from)).is_file():
        raise ConfigError(f"init_from={init_from}: no such checkpoint or weights file")
