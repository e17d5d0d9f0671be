"""What the non-finite check before every checkpoint save costs, on EDSR-baseline x2 (1.37M weights).

    python scripts/bench_guard.py                  # --rounds 15 --threads 1
    python scripts/bench_guard.py --threads 2

Three figures, each the median over ``--rounds``: the check alone (``refuse_nonfinite_checkpoint`` on the
module's state dict; next to it, interleaved, the obvious ``isfinite(t).all()`` per tensor), a whole
``trainer.save_checkpoint`` of the trained module (weights, Adam state, loops; written atomically to a
temporary folder) with the check and without it, interleaved A B A B so that load swings hit both alike
(``save_ratio`` is the median of the paired ratios), and one training step (batch 16, LR patch 48, L1 loss,
Adam) for scale. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import pspl_lightning.module as module_py
from pspl_lightning.callbacks.guards import refuse_nonfinite_checkpoint
from pspl_lightning.checkpointing import AtomicCheckpointIO
from pspl_lightning.module import SRModule

EDSR_BASELINE = {"_target_": "pspl_lightning.archs.EDSR", "scale": 2, "n_resblocks": 16, "n_feats": 64,
                 "res_scale": 1.0}
L1 = {"_target_": "torch.nn.L1Loss"}


def _ms(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    module = SRModule(net=EDSR_BASELINE, loss=L1, scale=2)
    data = TensorDataset(torch.randint(0, 256, (16, 3, 48, 48), dtype=torch.uint8),
                         torch.randint(0, 256, (16, 3, 96, 96), dtype=torch.uint8))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, plugins=[AtomicCheckpointIO()])
    trainer.fit(module, DataLoader(data, batch_size=16))  # Adam state exists: a checkpoint of real size

    state = module.state_dict()
    check_ms, isfinite_ms = [], []
    for _ in range(args.rounds):
        check_ms.append(_ms(lambda: refuse_nonfinite_checkpoint({"state_dict": state}, 0)))
        isfinite_ms.append(_ms(lambda: bool(torch.stack([t.isfinite().all() for t in state.values()]).all())))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.ckpt"
        save_with, save_without = [], []
        for _ in range(args.rounds):
            save_with.append(_ms(lambda: trainer.save_checkpoint(path, weights_only=False)))
            module_py.refuse_nonfinite_checkpoint = lambda checkpoint, step: None  # the save, unchecked
            save_without.append(_ms(lambda: trainer.save_checkpoint(path, weights_only=False)))
            module_py.refuse_nonfinite_checkpoint = refuse_nonfinite_checkpoint
        size_mb = path.stat().st_size / 2**20

    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
    lr, hr = (t.float() / 255 for t in data.tensors)

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.l1_loss(module(lr), hr).backward()
        optimizer.step()

    step_ms = [_ms(step) for _ in range(max(3, args.rounds // 5))]

    result = {
        "weights": sum(p.numel() for p in module.parameters()),
        "threads": args.threads,
        "check_ms": statistics.median(check_ms),
        "isfinite_all_ms": statistics.median(isfinite_ms),  # the obvious way, for comparison
        "save_with_check_ms": statistics.median(save_with),
        "save_without_check_ms": statistics.median(save_without),
        "save_ratio": statistics.median(a / b for a, b in zip(save_with, save_without, strict=True)),
        "checkpoint_mb": size_mb,
        "step_ms": statistics.median(step_ms),
    }
    result["check_per_step_pct"] = 100 * result["check_ms"] / result["step_ms"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
