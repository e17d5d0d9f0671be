"""Instantiate what a training run is made of from its config: DataModule, SRModule, loggers, Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from pspl_lightning.callbacks.history import LoggedHistory
from pspl_lightning.callbacks.results import FinalResults
from pspl_lightning.checkpointing import AtomicCheckpointIO
from pspl_lightning.cli.run_folder import resolved_config
from pspl_lightning.errors import ConfigError, UserError
from pspl_lightning.inference.warm_start import load_matching_weights
from pspl_lightning.module import SRModule


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate(node)``; a :class:`UserError` of the constructor comes out as itself (Hydra wraps it)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause: BaseException | None = exc
        while isinstance(cause, InstantiationException):  # nested configs wrap once per level
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


def build_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group, skipping entries set to null."""
    if not group:
        return []
    return [build(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def build_module(cfg: DictConfig, val_set_names: list[str] | None = None,
                 warm_start: bool = True) -> SRModule:
    """``cfg.module`` instantiated, then warm-started from ``init_from`` unless ``warm_start`` is off
    (a resumed run, whose checkpoint holds the weights)."""
    extra = {"val_set_names": val_set_names} if val_set_names is not None else {}
    module: SRModule = build(cfg.module, run_config=resolved_config(cfg), **extra)
    init_from = cfg.get("init_from")
    if warm_start and init_from:
        load_matching_weights(module.plain_net, init_from)
    return module


def check_accelerator(accelerator: str) -> None:
    """A GPU trainer on a machine without CUDA: say which trainer options work here."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} asks for a GPU, but CUDA is not available on "
                          f"this machine: use trainer=default (the GPU when there is one, else the CPU), "
                          f"trainer=cpu, or trainer=ddp_cpu (2 CPU processes)")


def build_trainer(cfg: DictConfig, output_dir: Path) -> tuple[L.Trainer, list[Logger]]:
    """The Trainer with the configured loggers and callbacks, end-of-run results and atomic checkpoints."""
    check_accelerator(str(cfg.trainer.get("accelerator", "auto")))
    loggers: list[Logger] = build_group(cfg.get("logger"))
    callbacks: list[Callback] = build_group(cfg.get("callbacks"))
    callbacks += [FinalResults(output_dir), LoggedHistory()]
    trainer: L.Trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     default_root_dir=str(output_dir), plugins=[AtomicCheckpointIO()])
    return trainer, loggers
