"""SRModule as a Lightning user expects it: rebuilt from a checkpoint alone, with the same scores."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from pspl_lightning.cli.train import train
from pspl_lightning.losses import PSPLLoss
from pspl_lightning.module import SRModule


def test_load_from_checkpoint_alone_gives_the_runs_validation(train_cfg) -> None:
    cfg = train_cfg("trainer.max_steps=4", "trainer.val_check_interval=4")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    module = SRModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    assert isinstance(module.loss, PSPLLoss) and module.hparams.scale == 2
    assert module.hparams.net["n_feats"] == 8  # the network config, as plain data
    datamodule = instantiate(cfg.data)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    saved = json.loads((run / "metrics.json").read_text())
    assert module.last_val_metrics["val/psnr_y"] == pytest.approx(saved["val/psnr_y"], abs=1e-9)
    assert module.last_val_metrics["val/ssim_y"] == pytest.approx(saved["val/ssim_y"], abs=1e-9)


def test_hyperparameters_are_plain_configs(train_cfg) -> None:
    """What the checkpoint stores rebuilds the optimizer and the step schedule of the run."""
    cfg = train_cfg("schedule.lr_milestones=[3]", "schedule.lr_gamma=0.25", "optimizer.lr=0.01")
    from pspl_lightning.cli.build import build_module

    module = build_module(cfg, ["sample"])
    assert module.hparams.scheduler == {"_target_": "torch.optim.lr_scheduler.MultiStepLR", "_partial_": True,
                                        "milestones": [3], "gamma": 0.25}
    opts = module.configure_optimizers()
    optimizer, scheduler = opts["optimizer"], opts["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.01
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert "init_from" not in module.hparams.net  # model holds constructor arguments only
