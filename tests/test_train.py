"""End-to-end training through the composed Hydra config: PSPL and L1, metrics.json, the final validation."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import pytest

from pspl_lightning.cli.train import train
from pspl_lightning.losses import PSPLLoss


def _train_rows(run: Path, key: str) -> list[float]:
    with open(run / "csv" / "metrics.csv") as fh:
        return [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]


@pytest.mark.parametrize("loss", ["pspl", "l1"])
def test_training_reduces_loss_and_writes_metrics(train_cfg, loss: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cfg = train_cfg(f"loss={loss}", "trainer.max_steps=40", "trainer.val_check_interval=15",
                    "schedule.lr_milestones=[30]", "optimizer.lr=2e-3", "model.n_feats=16")
    with caplog.at_level(logging.INFO, logger="pspl_lightning"):
        metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    final = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Final validation")]
    assert final == [f"Final validation at step 40: val/psnr_y = {metrics['val/psnr_y']:.4f}, "
                     f"val/ssim_y = {metrics['val/ssim_y']:.4f} (in {run / 'metrics.json'})"]

    # ModelCheckpoint keeps the best validation (of steps 15, 30, 40), named by its step and PSNR-Y
    with open(run / "csv" / "metrics.csv") as fh:  # Lightning logs a validation at its step - 1
        val = {int(r["step"]) + 1: float(r["val/psnr_y"]) for r in csv.DictReader(fh) if r.get("val/psnr_y")}
    assert sorted(val) == [15, 30, 40]
    best_step = max(val, key=val.get)
    assert [p.name for p in (run / "checkpoints").glob("step*.ckpt")] == [
        f"step{best_step:07d}-psnr_y{val[best_step]:.4f}.ckpt"]

    l1 = _train_rows(run, "train/l1")
    assert len(l1) == 40
    assert sum(l1[-8:]) / 8 < 0.8 * sum(l1[:8]) / 8  # the network learns (plain L1 falls for both losses)

    saved = json.loads((run / "metrics.json").read_text())
    assert saved["global_step"] == 40  # 40 is not a multiple of 15: the final validation ran anyway
    assert saved["val/psnr_y"] == pytest.approx(metrics["val/psnr_y"])
    assert saved["val/psnr_y"] == saved["val/sample/psnr_y"]
    assert 20 < saved["val/psnr_y"] < 50 and math.isfinite(saved["val/psnr_y"])
    assert 0.5 < saved["val/ssim_y"] <= 1
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_sigma_follows_global_step(train_cfg) -> None:
    """The pace callback sets sigma = alpha * (step + 1) / step_unit + beta before every step."""
    cfg = train_cfg("loss.alpha=0.3", "loss.beta=0.5", "loss.step_unit=4", "trainer.max_steps=5")
    train(cfg)
    sigmas = _train_rows(Path(cfg.paths.output_dir), "pspl/sigma")
    assert sigmas == pytest.approx([0.3 * (g + 1) / 4 + 0.5 for g in range(5)], abs=1e-6)


def test_final_weights_stats_logged(train_cfg) -> None:
    cfg = train_cfg("trainer.max_steps=3")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    w_min, w_mean, w_max = (_train_rows(run, f"pspl/weight_{k}") for k in ("min", "mean", "max"))
    assert len(w_mean) == 3
    for lo, mid, hi in zip(w_min, w_mean, w_max, strict=True):
        assert 0 <= lo <= mid <= hi <= 2.0


def test_loss_is_instantiated_from_config(train_cfg) -> None:
    from hydra.utils import instantiate

    loss = instantiate(train_cfg("loss=pspl_normalized", "loss.max_weight=3").loss)
    assert isinstance(loss, PSPLLoss)
    assert (loss.ssim_mode, loss.max_weight, loss.step_unit) == ("normalized", 3.0, 10)


def test_pspl_module_attaches_its_own_pace(train_cfg) -> None:
    """loss=pspl needs no entry in the callbacks group: SRModule.configure_callbacks adds the pace."""
    cfg = train_cfg("trainer.max_steps=3", "callbacks=ema")
    assert not any("Pace" in str(entry.get("_target_", "")) for entry in cfg.callbacks.values() if entry)
    train(cfg)
    sigmas = _train_rows(Path(cfg.paths.output_dir), "pspl/sigma")
    assert sigmas == pytest.approx([(g + 1) / cfg.loss.step_unit for g in range(3)], abs=1e-6)


def test_the_sweep_objective_is_a_config_key(train_cfg) -> None:
    """What a job returns to a Hydra sweeper (Optuna) is metrics.json's `optimized_metric`."""
    from pspl_lightning.cli.train import _hydra_main

    cfg = train_cfg("trainer.max_steps=2", "optimized_metric=val/ssim_y")
    value = _hydra_main(cfg)  # Hydra passes a given config straight to the task
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert value == saved["val/ssim_y"] and 0 < value <= 1
