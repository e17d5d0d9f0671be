"""Test helpers importable by spawned processes: a per-rank recorder and a loss that turns NaN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from pspl_lightning.losses import PSPLLoss


class RankProbe(Callback):
    """Every rank appends (step, sigma, lr, world size) to ``out_dir/rank<r>.jsonl`` before each update
    (sigma: the paced loss's ``sigma_at`` at the step, which the module passes to the loss; else None)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pace = getattr(pl_module.loss, "sigma_at", None)  # a paced loss: the sigma this step trains with
        row = {"step": trainer.global_step, "sigma": pace(trainer.global_step) if pace else None,
               "lr": optimizer.param_groups[0]["lr"], "world": trainer.world_size}
        with open(self.out_dir / f"rank{trainer.global_rank}.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")


class NaNOnCall(nn.Module):
    """Mean L1, except that call number ``bad_call`` (0-based) returns NaN."""

    def __init__(self, bad_call: int) -> None:
        super().__init__()
        self.bad_call, self.calls = bad_call, 0

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        loss = (sr - hr).abs().mean()
        self.calls += 1
        return loss * torch.tensor(float("nan")) if self.calls - 1 == self.bad_call else loss


class StopAt(Callback):
    """Ends ``fit`` after optimizer step ``step``, as an interruption would (without touching max_steps)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True



class PSPLNaNOnRank(PSPLLoss):
    """PSPL whose call number ``nan_call`` (0-based) returns NaN on DDP rank ``nan_rank`` only."""

    def __init__(self, nan_rank: int, nan_call: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_rank, self.nan_call, self.calls = nan_rank, nan_call, 0

    def loss_and_weights(self, sr: Tensor, hr: Tensor, sigma: float | None = None) -> tuple[Tensor, Tensor]:
        loss, weights = super().loss_and_weights(sr, hr, sigma)
        self.calls += 1
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        bad = self.calls - 1 == self.nan_call and rank == self.nan_rank
        return (loss * float("nan") if bad else loss), weights


class SkipProbe(Callback):
    """Every rank appends (global step, whether the batch was skipped) to ``out_dir/skips<r>.jsonl``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / f"skips{trainer.global_rank}.jsonl", "a") as fh:
            fh.write(json.dumps({"step": trainer.global_step, "skipped": "skipped" in outputs}) + "\n")
