"""The paced-loss contract (pspl_lightning/losses/paced.py): a loss defined outside the package, named by
``loss._target_`` alone, gets its sigma from the global step, logged as ``pspl/sigma`` with its weights."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError


class ScaledL1(nn.Module):
    """A paced loss no file of the project names: every pixel weighs sigma, and sigma halves every step
    from 2 (so the loss is ``sigma * L1``, which the logged ``train/l1`` checks independently)."""

    def __init__(self, start: float = 2.0) -> None:
        super().__init__()
        self.start = start

    def sigma_at(self, global_step: int) -> float:
        return self.start * 0.5**global_step

    def loss_and_weights(self, sr: Tensor, hr: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        w = torch.full_like(sr, sigma)
        return ((sr.float() - hr.float()).abs() * w).mean(), w


class SlowingL1(ScaledL1):
    """Sigma falls by 0.5 a step from ``start``: not > 0 for the whole of a longer run."""

    def sigma_at(self, global_step: int) -> float:
        return self.start - 0.5 * global_step


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv") as fh:
        return [r for r in csv.DictReader(fh) if r.get("pspl/sigma")]


def test_a_paced_loss_from_outside_the_package_is_paced(train_cfg) -> None:
    cfg = train_cfg("loss=l1", f"loss._target_={__name__}.ScaledL1", "+loss.start=2.0", "trainer.max_steps=4",
                    "trainer.val_check_interval=4")
    train(cfg)
    rows = _rows(Path(cfg.paths.output_dir))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["pspl/sigma"]) for r in rows] == [2.0, 1.0, 0.5, 0.25]  # sigma_at(global_step)
    for r in rows:  # the loss the module optimised is the one computed with that sigma
        sigma = float(r["pspl/sigma"])
        assert float(r["train/loss"]) == pytest.approx(sigma * float(r["train/l1"]), rel=1e-5)
        assert float(r["pspl/weight_mean"]) == float(r["pspl/weight_min"]) == float(r["pspl/weight_max"]) \
            == pytest.approx(sigma)


def test_a_paced_loss_whose_sigma_fails_within_the_run_is_refused(train_cfg) -> None:
    """Without a ``check_run`` of its own, sigma must be > 0 at the first and the last step."""
    cfg = train_cfg("loss=l1", f"loss._target_={__name__}.SlowingL1", "+loss.start=2.0",
                    "trainer.max_steps=6")
    with pytest.raises(ConfigError, match=r"SlowingL1.sigma_at\(5\) = -0.5: a paced loss's sigma must stay"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").exists()
