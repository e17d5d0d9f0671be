"""Lightning's cost: steps/s of ``pspl-train`` versus a hand-written PyTorch loop doing the same work.

    python scripts/bench_loop.py                      # EDSR-baseline x2, batch 16, LR 48, loss=pspl
    python scripts/bench_loop.py --tiny               # a tiny network, where per-step overhead shows
    python scripts/bench_loop.py -- logger=wandb      # extra Hydra overrides for the pspl-train side

The ``pspl-train`` side is the real thing: the training config composed by Hydra as the CLI does,
``train(cfg)`` with the default trainer, callbacks (checkpointing, LR monitor, progress bar, PSPL pace)
and logging interval; only the data come from memory (random uint8 patches, no files) and a callback
stamps the end of every step. The hand-written loop builds the same network, loss, optimizer and LR
schedule from the same config and runs the same steps (uint8 -> float, forward, PSPL sigma, loss,
backward, Adam, scheduler). Both run in turn for ``--rounds`` rounds; the time of a step is the median
interval between step ends after ``--warmup`` steps, and ``ratio`` (Lightning steps/s over the loop's,
goal >= 0.97) is the median over rounds of the paired ratio. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("WANDB_MODE", "disabled")  # never touch the network from a benchmark

import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from pspl_lightning.cli.build import build_module  # noqa: E402
from pspl_lightning.cli.hydra_setup import config_dir  # noqa: E402
from pspl_lightning.cli.train import train  # noqa: E402
from pspl_lightning.losses import PSPLLoss  # noqa: E402
from pspl_lightning.module import SRModule  # noqa: E402

STAMPS: list[tuple[float, float]] = []  # (wall, process CPU) time at the end of each step, from StepTimer
TINY = ["model.n_resblocks=1", "model.n_feats=8"]
AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16}  # 16-mixed would also need a GradScaler


class StepTimer(Callback):
    """Records the time at the end of every training batch (after the optimizer step and logging)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        STAMPS.append((time.perf_counter(), time.process_time()))


class MemoryDataModule(L.LightningDataModule):
    """Random uint8 (LR, HR) patches held in memory: the data cost nothing, the loop is what is timed."""

    def __init__(self, scale: int = 2, patch_size: int = 96, batch_size: int = 16, num_samples: int = 64,
                 seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        lr_size = patch_size // scale
        self.scale, self.patch_size, self.batch_size = scale, patch_size, batch_size
        self.lr = torch.randint(0, 256, (num_samples, 3, lr_size, lr_size), dtype=torch.uint8, generator=gen)
        self.hr = torch.randint(0, 256, (num_samples, 3, patch_size, patch_size), dtype=torch.uint8,
                                generator=gen)

    @property
    def val_set_names(self) -> list[str]:
        return ["val"]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.lr, self.hr), batch_size=self.batch_size, shuffle=True,
                          drop_last=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(TensorDataset(self.lr[:1], self.hr[:1]), batch_size=1)]


def compose_train(overrides: list[str], out_dir: Path) -> DictConfig:
    """The training config as ``pspl-train`` composes it, with outputs under ``out_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"paths.root_dir={out_dir}", *overrides],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir / "run")
        cfg.hydra.runtime.output_dir = str(out_dir / "run")
    HydraConfig.instance().set_config(cfg)
    return cfg


def memory_data(cfg: DictConfig, num_samples: int) -> dict[str, Any]:
    return {"_target_": f"{__name__}.MemoryDataModule", "scale": cfg.data.scale,
            "patch_size": cfg.data.patch_size, "batch_size": cfg.data.batch_size, "num_samples": num_samples}


def step_time(stamps: list[tuple[float, float]], warmup: int) -> tuple[float, float]:
    """Median wall and CPU intervals between consecutive step ends, the first ``warmup`` steps dropped."""
    kept = stamps[warmup:]
    wall = [b[0] - a[0] for a, b in zip(kept, kept[1:], strict=False)]
    cpu = [b[1] - a[1] for a, b in zip(kept, kept[1:], strict=False)]
    return statistics.median(wall), statistics.median(cpu)


def run_lightning(overrides: list[str], steps: int, num_samples: int) -> list[tuple[float, float]]:
    """End times of ``steps`` steps of ``train(cfg)`` (pspl-train's code path) on in-memory data."""
    STAMPS.clear()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_train([*overrides, f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}"],
                            Path(tmp))
        with open_dict(cfg):
            cfg.data = memory_data(cfg, num_samples)
            cfg.callbacks.step_timer = {"_target_": f"{__name__}.StepTimer"}
        train(cfg)
    return list(STAMPS)


def run_manual(overrides: list[str], steps: int, num_samples: int,
               device: torch.device) -> list[tuple[float, float]]:
    """End times of ``steps`` steps of a plain PyTorch loop doing the same work as the Lightning module."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_train(overrides, Path(tmp))
    L.seed_everything(cfg.seed, workers=True)
    data = instantiate(memory_data(cfg, num_samples))
    net = build_module(cfg).net.to(device)
    loss_fn = instantiate(cfg.loss).to(device)
    opt = instantiate(cfg.optimizer)([p for p in net.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.schedule.lr_milestones), cfg.schedule.lr_gamma)
    net.train()
    torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark"))  # as Lightning applies it
    autocast_dtype = AUTOCAST.get(str(cfg.trainer.precision))
    stamps: list[tuple[float, float]] = []
    step = 0
    while step < steps:
        for batch in data.train_dataloader():
            lr, hr = SRModule.to_float(tuple(t.to(device, non_blocking=True) for t in batch))
            if isinstance(loss_fn, PSPLLoss):
                loss_fn.set_step(step)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = loss_fn(net(lr), hr)
            loss.backward()
            opt.step()
            sched.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append((time.perf_counter(), time.process_time()))
            step += 1
            if step == steps:
                break
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=14, help="steps per run (the first --warmup untimed)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="Lightning / hand-written runs in turn")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=96, help="HR patch side (LR = patch / scale)")
    parser.add_argument("--tiny", action="store_true", help="a 1-block, 8-feature EDSR: overhead shows")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--logger", default="csv", help="logger group of both configs (csv, wandb, none)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both sides")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    common = [f"data.batch_size={args.batch}", f"data.patch_size={args.patch}", f"logger={args.logger}",
              *(TINY if args.tiny else []), *args.overrides]
    num_samples = args.batch * 4
    ratios, cpu_ratios, lit_all, man_all, lit_cpu, man_cpu = [], [], [], [], [], []
    for r in range(args.rounds):
        lit, lit_c = step_time(run_lightning(common, args.steps, num_samples), args.warmup)
        man, man_c = step_time(run_manual(common, args.steps, num_samples, device), args.warmup)
        ratios.append(man / lit)  # = (1 / lit) / (1 / man): Lightning steps/s over the loop's
        cpu_ratios.append(man_c / lit_c)
        lit_all.append(lit)
        man_all.append(man)
        lit_cpu.append(lit_c)
        man_cpu.append(man_c)
        print(f"round {r + 1}: pspl-train {1 / lit:.3f} steps/s, hand-written {1 / man:.3f} steps/s, "
              f"ratio {man / lit:.4f} (CPU time per step {lit_c * 1e3:.1f} vs {man_c * 1e3:.1f} ms)",
              file=sys.stderr)
    result = {
        "ratio": statistics.median(ratios), "lightning_steps_per_s": 1 / statistics.median(lit_all),
        "manual_steps_per_s": 1 / statistics.median(man_all),
        "lightning_step_ms": statistics.median(lit_all) * 1e3,
        "manual_step_ms": statistics.median(man_all) * 1e3,
        "overhead_ms_per_step": (statistics.median(lit_all) - statistics.median(man_all)) * 1e3,
        "ratio_cpu": statistics.median(cpu_ratios), "lightning_step_cpu_ms": statistics.median(lit_cpu) * 1e3,
        "manual_step_cpu_ms": statistics.median(man_cpu) * 1e3,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rounds": args.rounds,
        "steps": args.steps, "warmup": args.warmup, "tiny": args.tiny, "batch": args.batch,
        "patch": args.patch,
        "logger": args.logger, "threads": torch.get_num_threads(), "device": str(device),
        "load_avg_1min": os.getloadavg()[0],
    }
    print(f"pspl-train {result['lightning_steps_per_s']:.3f} steps/s vs hand-written "
          f"{result['manual_steps_per_s']:.3f} steps/s: ratio {result['ratio']:.4f} (goal >= 0.97)")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
