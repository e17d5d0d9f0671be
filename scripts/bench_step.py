"""Cost of PSPL in a training step: EDSR-baseline steps with ``loss=pspl`` vs ``loss=l1``, and the loss alone.

    python scripts/bench_step.py                          # CPU or the visible GPU, the issue's setting
    python scripts/bench_step.py --precision bf16-mixed --channels-last --compile   # GPU fast paths

A step is network forward, loss, backward and an Adam step, with the network and loss built from the
training configs (``model=edsr_baseline``, ``loss=pspl`` / ``loss=l1``) by Hydra, so the figures follow
the configs. The two losses run interleaved (A B A B ...) after a warm-up; the PSPL overhead is the median
over rounds of the paired ratio ``t_pspl / t_l1`` (pairing cancels slow drifts of a shared machine).
The loss alone is forward + backward on the HR-sized batch. Peak memory is the process's peak RSS on
CPU, ``torch.cuda.max_memory_allocated`` on GPU. The last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from pspl_lightning.cli.build import build_module
from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.losses import PSPLLoss

AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def compose_train(overrides: list[str]) -> DictConfig:
    """The training config as ``pspl-train <overrides>`` would compose it (no run folder is made)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call of ``fn``, the device drained before and after.

    On a shared CPU the wall time includes waiting for a core; with one thread the CPU time does not.
    """
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int,
                device: torch.device) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-round wall and CPU times of each function, run A B A B ... after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            w, c = timed(fn, device)
            wall[name].append(w)
            cpu[name].append(c)
    return wall, cpu


def train_step(cfg: DictConfig, device: torch.device, batch: int, lr_patch: int,
               precision: str) -> Callable[[], None]:
    """One optimizer step of ``cfg.model`` trained with ``cfg.loss`` on a fixed random batch."""
    torch.manual_seed(0)
    net = build_module(cfg).net.to(device)
    loss_fn = instantiate(cfg.loss).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    scale = int(cfg.data.scale)
    lr = torch.rand(batch, 3, lr_patch, lr_patch, device=device)
    hr = torch.rand(batch, 3, lr_patch * scale, lr_patch * scale, device=device)
    if cfg.fast.get("channels_last"):
        lr = lr.contiguous(memory_format=torch.channels_last)
    dtype = AUTOCAST[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step = [0]

    def run() -> None:
        if isinstance(loss_fn, PSPLLoss):
            loss_fn.set_step(step[0])
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            sr = net(lr)
            loss = loss_fn(sr, hr)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        step[0] += 1

    return run


def loss_only(loss_fn: torch.nn.Module, device: torch.device, batch: int, size: int) -> Callable[[], None]:
    """Forward + backward of ``loss_fn`` on a B x 3 x size x size batch (the SR output needs a gradient)."""
    gen = torch.Generator().manual_seed(1)
    hr = torch.rand(batch, 3, size, size, generator=gen).to(device)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=gen).to(device)).requires_grad_(True)
    if isinstance(loss_fn, PSPLLoss):
        loss_fn.set_step(500)

    def run() -> None:
        sr.grad = None
        loss_fn(sr, hr).backward()

    return run


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what the platform module knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=7, help="timed A/B rounds (>= 7 for a stable median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr-patch", type=int, default=48)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--model", default="edsr_baseline")
    parser.add_argument("--precision", choices=sorted(AUTOCAST), default="32-true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--loss-rounds", type=int, default=21, help="rounds of the loss-alone timing")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 gives stable figures on a busy machine")
    parser.add_argument("--skip-steps", action="store_true", help="only time the loss alone")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides of the PSPL side, e.g. loss=pspl_normalized")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    common = [f"model={args.model}", f"data.scale={args.scale}", f"fast.channels_last={args.channels_last}",
              f"fast.compile={args.compile}"]
    pspl_group = [] if any(o.startswith("loss=") for o in args.overrides) else ["loss=pspl"]
    cfg_pspl = compose_train([*common, *pspl_group, *args.overrides])
    cfg_l1 = compose_train([*common, "loss=l1"])
    hr_size = args.lr_patch * args.scale
    result: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "precision": args.precision,
        "channels_last": args.channels_last, "compile": args.compile, "batch": args.batch,
        "lr_patch": args.lr_patch, "scale": args.scale, "model": args.model,
        "ssim_dtype": str(instantiate(cfg_pspl.loss).ssim_dtype).removeprefix("torch."),
    }

    loss_fns = {"pspl": loss_only(instantiate(cfg_pspl.loss).to(device), device, args.batch, hr_size),
                "l1": loss_only(instantiate(cfg_l1.loss).to(device), device, args.batch, hr_size)}
    loss_wall, loss_cpu = interleaved(loss_fns, args.loss_rounds, 3, device)
    result["loss_ms"] = statistics.median(loss_wall["pspl"]) * 1e3
    result["l1_loss_ms"] = statistics.median(loss_wall["l1"]) * 1e3
    result["loss_cpu_ms"] = statistics.median(loss_cpu["pspl"]) * 1e3
    result["l1_loss_cpu_ms"] = statistics.median(loss_cpu["l1"]) * 1e3
    print(f"loss alone, {args.batch} x 3 x {hr_size} x {hr_size}, forward + backward (median of "
          f"{args.loss_rounds}): PSPL {result['loss_ms']:.2f} ms, L1 {result['l1_loss_ms']:.2f} ms "
          f"(CPU time: PSPL {result['loss_cpu_ms']:.2f} ms, L1 {result['l1_loss_cpu_ms']:.2f} ms)")

    if not args.skip_steps:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps = {"pspl": train_step(cfg_pspl, device, args.batch, args.lr_patch, args.precision),
                 "l1": train_step(cfg_l1, device, args.batch, args.lr_patch, args.precision)}
        times, cpu_times = interleaved(steps, args.rounds, args.warmup, device)
        ratios = [p / q for p, q in zip(times["pspl"], times["l1"], strict=True)]
        cpu_ratios = [p / q for p, q in zip(cpu_times["pspl"], cpu_times["l1"], strict=True)]
        result["pspl_overhead_cpu_pct"] = (statistics.median(cpu_ratios) - 1) * 100
        result["step_pspl_cpu_s"] = statistics.median(cpu_times["pspl"])
        result["step_l1_cpu_s"] = statistics.median(cpu_times["l1"])
        result["step_pspl_s"] = statistics.median(times["pspl"])
        result["step_l1_s"] = statistics.median(times["l1"])
        result["pspl_overhead_pct"] = (statistics.median(ratios) - 1) * 100
        result["pspl_overhead_pct_from_loss"] = ((result["loss_ms"] - result["l1_loss_ms"]) / 1e3
                                                 / result["step_l1_s"] * 100)
        result["peak_memory_mb"] = peak_memory_mb(device)
        result["rounds"] = args.rounds
        print(f"step ({args.model} x{args.scale}, batch {args.batch}, LR {args.lr_patch}; median of "
              f"{args.rounds} interleaved rounds): PSPL {result['step_pspl_s']:.4f} s, "
              f"L1 {result['step_l1_s']:.4f} s, ratio {statistics.median(ratios):.4f} "
              f"(PSPL overhead {result['pspl_overhead_pct']:+.2f}%; from the loss-alone times "
              f"{result['pspl_overhead_pct_from_loss']:+.2f}%); "
              f"peak memory {result['peak_memory_mb']:.0f} MB")
    result["load_avg_1min"] = os.getloadavg()[0]
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
