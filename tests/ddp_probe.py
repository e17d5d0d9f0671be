"""A callback for DDP tests: every rank records (step, sigma, lr) to its own JSON-lines file.

Kept in an importable module so that processes started by ``ddp_spawn`` can unpickle it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class RankProbe(Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        row = {"step": trainer.global_step, "sigma": getattr(pl_module.loss, "sigma", None),
               "lr": optimizer.param_groups[0]["lr"], "world": trainer.world_size}
        with open(self.out_dir / f"rank{trainer.global_rank}.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
