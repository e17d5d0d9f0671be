"""The configured loggers: W&B without the setting wandb only warns about, offline without a key."""

from __future__ import annotations

from hydra.utils import instantiate

from pspl_lightning.loggers import WandbLogger


def test_wandb_logger_passes_no_anonymous_setting(train_cfg) -> None:
    logger = instantiate(train_cfg("logger=wandb").logger.wandb)
    assert isinstance(logger, WandbLogger)
    assert "anonymous" not in logger._wandb_init  # wandb: "The anonymous setting has no effect"
    assert logger._wandb_init["project"] == "pspl-lightning"
