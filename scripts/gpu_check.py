"""The GPU figures of docs/BENCHMARKS.md in one command, in under 8 minutes; the last line is one JSON object.

    python scripts/gpu_check.py                  # on a CUDA machine
    python scripts/gpu_check.py --budget 300     # stop starting new measurements after 300 s

Measures, each in the same process unless said otherwise:

- ``steps``: steps/s of EDSR-baseline x2 and RCAN x2 (batch 16, LR patch 48, PSPL loss, Adam) for fp32
  eager, bf16-mixed, bf16 + channels_last, and + torch.compile (in a child process with a timeout: a
  compile can take minutes), with the peak memory (``torch.cuda.max_memory_allocated``) of each;
- ``pspl_overhead``: PSPL against L1 per EDSR-baseline step, interleaved (fp32 and bf16 + channels_last);
- ``loss_alone``: the loss on 16 x 3 x 96 x 96 with float64 moments, the exact float32 method (the
  default), plain float32, the reference method and L1;
- ``loader``: training patches/s of the DIV2K DataModule with N workers, against the patches/s the
  fastest EDSR-baseline configuration consumes;
- ``sample_run``: ``pspl-train trainer=gpu logger=csv`` (200 steps on the built-in sample set, a child
  process) and its final Y-PSNR beside the CPU's (33.4737 dB, ``--cpu-psnr``).

A measurement that fails or does not fit in ``--budget`` is reported as ``{"error": ...}`` or
``{"skipped": ...}``; the JSON line is always printed. Without CUDA the script stops at once with one
line and exit status 2 (``--device cpu`` runs the pieces on the CPU, for tests).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

CPU_SAMPLE_PSNR = 33.4737  # the same run on the 2-core CPU (2 threads), docs/BENCHMARKS.md
SCRIPTS = Path(__file__).resolve().parent
STEP_VARIANTS = {  # name: (trainer.precision, channels_last, compile)
    "fp32_eager": ("32-true", False, False),
    "bf16_mixed": ("bf16-mixed", False, False),
    "bf16_channels_last": ("bf16-mixed", True, False),
    "bf16_channels_last_compile": ("bf16-mixed", True, True),
}
NO_CUDA = ("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a machine with an "
           "NVIDIA GPU: python scripts/gpu_check.py")


def _bench_step() -> ModuleType:
    """scripts/bench_step.py as a module (its step, loss and timing helpers)."""
    spec = importlib.util.spec_from_file_location("pspl_bench_step", SCRIPTS / "bench_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def require_device(name: str) -> torch.device:
    """The device to measure on; without CUDA (and not asked for the CPU) print one line and exit 2."""
    if name == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        raise SystemExit(2)
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def steps_per_second(model: str, variant: str, device: torch.device, *, batch: int = 16, lr_patch: int = 48,
                     steps: int = 20, warmup: int = 5, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Steps/s of ``model`` x2 trained with PSPL under ``variant`` (a key of STEP_VARIANTS).

    The first ``warmup`` steps (cudnn autotuning, compile) are timed apart as ``warmup_s``; steps/s is
    1 / the median of the next ``steps`` step times, each drained with a device sync.
    """
    bench = _bench_step()
    precision, channels_last, compile_ = STEP_VARIANTS[variant]
    cfg = bench.compose_train([f"model={model}", "data.scale=2", "loss=pspl",
                               f"fast.channels_last={channels_last}", f"fast.compile={compile_}", *extra])
    _reset_peak(device)
    run = bench.train_step(cfg, device, batch, lr_patch, precision)
    start = time.perf_counter()
    for _ in range(warmup):
        run()
    _sync(device)
    warmup_s = time.perf_counter() - start
    times = [bench.timed(run, device)[0] for _ in range(steps)]
    step_s = statistics.median(times)
    return {"steps_per_s": 1.0 / step_s, "step_ms": step_s * 1e3, "warmup_s": warmup_s,
            "peak_memory_mb": bench.peak_memory_mb(device)}


def steps_in_child(model: str, variant: str, device: torch.device, timeout: float,
                   extra: tuple[str, ...] = (), steps: int = 20, warmup: int = 5) -> dict[str, Any]:
    """:func:`steps_per_second` in a child process (fresh memory, and a compile that overruns is killed)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--steps-only", model, variant, "--device",
           device.type, "--steps", str(steps), "--warmup", str(warmup), *extra]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {_last_line(done.stderr)}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def pspl_overhead(device: torch.device, variant: str, *, rounds: int = 10, warmup: int = 3, batch: int = 16,
                  lr_patch: int = 48, model: str = "edsr_baseline") -> dict[str, float]:
    """PSPL against L1 per training step, interleaved (A B A B); the median of the paired ratios."""
    bench = _bench_step()
    precision, channels_last, compile_ = STEP_VARIANTS[variant]
    common = [f"model={model}", "data.scale=2", f"fast.channels_last={channels_last}",
              f"fast.compile={compile_}"]
    steps = {loss: bench.train_step(bench.compose_train([*common, f"loss={loss}"]), device, batch, lr_patch,
                                    precision) for loss in ("pspl", "l1")}
    wall, _ = bench.interleaved(steps, rounds, warmup, device)
    ratio = statistics.median(p / q for p, q in zip(wall["pspl"], wall["l1"], strict=True))
    return {"step_pspl_ms": statistics.median(wall["pspl"]) * 1e3,
            "step_l1_ms": statistics.median(wall["l1"]) * 1e3, "overhead_pct": (ratio - 1) * 100}


def loss_alone(device: torch.device, *, rounds: int = 21, batch: int = 16, size: int = 96) -> dict[str, Any]:
    """The loss alone (forward + backward), interleaved: each SSIM arithmetic, the reference method, L1.

    ``first_call_s`` of the exact method includes its compile (Triton on CUDA, C++ on the CPU).
    """
    bench = _bench_step()
    from pspl_lightning.losses import PSPLLoss

    exact = PSPLLoss()
    sigma = exact.sigma_at(bench.LOSS_STEP)
    fns = {"float32_exact": bench.loss_only(exact, device, batch, size)}
    start = time.perf_counter()
    fns["float32_exact"]()
    _sync(device)
    first_call_s = time.perf_counter() - start
    fns["float64"] = bench.loss_only(PSPLLoss(ssim_dtype="float64"), device, batch, size)
    fns["float32"] = bench.loss_only(PSPLLoss(ssim_dtype="float32"), device, batch, size)
    fns["reference"] = bench.loss_only(bench.ReferencePSPL(sigma).to(device), device, batch, size)
    fns["l1"] = bench.loss_only(torch.nn.L1Loss(), device, batch, size)
    wall, _ = bench.interleaved(fns, rounds, 3, device)
    ms = {name: statistics.median(times) * 1e3 for name, times in wall.items()}
    return {"ms": ms, "first_call_s": first_call_s,
            "exact_speedup_vs_float64": bench._paired_speedup(wall["float64"], wall["float32_exact"]),
            "exact_speedup_vs_reference": bench._paired_speedup(wall["reference"], wall["float32_exact"]),
            "shape": [batch, 3, size, size]}


def loader_patches_per_s(workers: list[int], *, seconds: float = 3.0, batch: int = 16, patch: int = 96,
                         images: int = 4, size: tuple[int, int] = (1356, 2040), pin_memory: bool = False,
                         root: Path | None = None) -> dict[str, float]:
    """Training patches/s of the DIV2K DataModule (built from its config) on DIV2K-like PNGs made here."""
    from pspl_lightning.cli.build import build
    from pspl_lightning.data.synthetic import make_div2k_folder

    bench = _bench_step()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        data = Path(tmp) / "DIV2K"
        make_div2k_folder(data, range(1, images + 1), range(801, 802), size=size, scales=(2,))
        for n in workers:
            cfg = bench.compose_train([
                "data=div2k", f"data.root={data}", f"data.cache_dir={Path(tmp) / 'cache'}",
                f"data.train_range=[1,{images}]", "data.val_range=[801,801]", "data.scale=2",
                f"data.patch_size={patch}", f"data.batch_size={batch}", f"data.num_workers={n}",
                f"data.pin_memory={pin_memory}", "data.progress=false", "data.repeat=10000"])
            dm = build(cfg.data)
            dm.prepare_data()
            dm.setup("fit")
            out[f"{n}_workers"] = _patches_per_s(dm.train_dataloader(), seconds)
    return out


def _patches_per_s(loader: Any, seconds: float) -> float:
    """Patches/s after one warm-up batch (which also starts the workers), over >= ``seconds``; an epoch
    that ends first (a fast machine drains a small one in no time) is followed by the next."""
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    while True:
        try:
            lr, _ = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += lr.shape[0]
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 2 * lr.shape[0]:
            return n / elapsed


def pspl_train_command() -> list[str]:
    """``pspl-train`` of this environment (the console script beside the interpreter, else the module)."""
    script = Path(sys.executable).with_name("pspl-train")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pspl_lightning.cli.train"]


def sample_run(overrides: list[str], timeout: float, *, command: list[str] | None = None,
               workdir: Path | None = None, cpu_psnr: float = CPU_SAMPLE_PSNR) -> dict[str, Any]:
    """Run ``pspl-train <overrides>`` in a child process with its run folder in a temporary directory.

    Returns the final ``val/psnr_y`` and ``val/ssim_y`` from the run's ``metrics.json``, the wall time,
    and the PSNR difference to ``cpu_psnr``; ``{"error": ...}`` when the run fails or times out.
    """
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        run_dir = Path(tmp) / "run"
        env = {**os.environ, "WANDB_MODE": "disabled"}
        cmd = [*(command or pspl_train_command()), *overrides, f"hydra.run.dir={run_dir}"]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timeout after {timeout:.0f} s", "command": " ".join(cmd)}
        seconds = time.perf_counter() - start
        metrics_file = run_dir / "metrics.json"
        if done.returncode != 0 or not metrics_file.is_file():
            return {"error": f"exit {done.returncode}: {_last_line(done.stderr or done.stdout)}",
                    "command": " ".join(cmd)}
        metrics = json.loads(metrics_file.read_text())
    psnr = float(metrics["val/psnr_y"])
    return {"psnr_y": psnr, "ssim_y": float(metrics.get("val/ssim_y", float("nan"))),
            "global_step": metrics.get("global_step"), "seconds": seconds, "cpu_psnr_y": cpu_psnr,
            "psnr_minus_cpu_db": psnr - cpu_psnr}


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class Budget:
    """Wall-clock budget of the whole check: what is left, and whether a measurement still fits."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def run(self, need: float, fn: Callable[[], Any]) -> Any:
        """``fn()`` if ``need`` seconds are left, else ``{"skipped": ...}``; errors come back, not raised."""
        if self.left() < need:
            return {"skipped": f"time budget ({self.left():.0f} s left, needs ~{need:.0f} s)"}
        try:
            return fn()
        except Exception as err:  # one failed measurement must not lose the others
            return {"error": f"{type(err).__name__}: {_last_line(str(err))}"}


def run_all(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, cheapest and most important first, within ``args.budget`` seconds."""
    budget = Budget(args.budget)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "budget_s": args.budget,
        "batch": args.batch, "lr_patch": args.lr_patch, "scale": 2, "steps": {},
    }
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    kw = {"batch": args.batch, "lr_patch": args.lr_patch, "steps": args.steps, "warmup": args.warmup}
    for model in args.models:
        report["steps"][model] = {}
        for variant in STEP_VARIANTS:
            if STEP_VARIANTS[variant][2]:
                continue  # compiled variants run last, in child processes
            report["steps"][model][variant] = budget.run(
                20, lambda m=model, v=variant: steps_per_second(m, v, device, **kw))
    first = args.models[0]
    report["pspl_overhead"] = {
        v: budget.run(30, lambda v=v: pspl_overhead(device, v, batch=args.batch, lr_patch=args.lr_patch,
                                                    model=first))
        for v in ("fp32_eager", "bf16_channels_last")}
    report["loss_alone"] = budget.run(60, lambda: loss_alone(device))
    report["sample_run"] = budget.run(
        90, lambda: sample_run([f"trainer={args.trainer}", "logger=csv", *args.sample_overrides],
                               timeout=min(300.0, budget.left() - 60), cpu_psnr=args.cpu_psnr))
    size = tuple(int(v) for v in args.loader_size.lower().split("x"))
    report["loader"] = budget.run(60, lambda: loader_patches_per_s(
        args.workers, seconds=args.loader_seconds, batch=args.batch, patch=2 * args.lr_patch,
        images=args.loader_images, size=size, pin_memory=device.type == "cuda"))
    rates = [r["steps_per_s"] for r in report["steps"][first].values() if "steps_per_s" in r]
    if rates and not {"error", "skipped"} & set(report["loader"]):
        report["loader"]["gpu_consumes_patches_per_s"] = max(rates) * args.batch
    for model in args.models:
        report["steps"][model]["bf16_channels_last_compile"] = budget.run(
            60, lambda m=model: steps_in_child(m, "bf16_channels_last_compile", device,
                                               timeout=max(budget.left() - 15, 1), steps=args.steps,
                                               warmup=args.warmup))
    report["elapsed_s"] = args.budget - budget.left()
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu runs the pieces, for tests")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds; no measurement starts after it")
    parser.add_argument("--models", nargs="+", default=["edsr_baseline", "rcan"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr-patch", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8], help="DataLoader workers to try")
    parser.add_argument("--loader-seconds", type=float, default=3.0)
    parser.add_argument("--loader-images", type=int, default=4, help="DIV2K-like training images to make")
    parser.add_argument("--loader-size", default="1356x2040", help="their size, HxW")
    parser.add_argument("--trainer", default="gpu", help="trainer group of the sample run")
    parser.add_argument("--sample-overrides", nargs="*", default=[],
                        help="extra pspl-train overrides of the sample run")
    parser.add_argument("--cpu-psnr", type=float, default=CPU_SAMPLE_PSNR,
                        help="the CPU's final val/psnr_y of the same 200-step run (`pspl-train logger=csv`)")
    parser.add_argument("--steps-only", nargs=2, metavar=("MODEL", "VARIANT"),
                        help="print one JSON line of steps_per_second(MODEL, VARIANT) and exit")
    parser.add_argument("extra", nargs="*", help="Hydra overrides for --steps-only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = require_device(args.device)
    if args.steps_only:
        model, variant = args.steps_only
        result = steps_per_second(model, variant, device, batch=args.batch, lr_patch=args.lr_patch,
                                  steps=args.steps, warmup=args.warmup, extra=tuple(args.extra))
        print(json.dumps(result))
        return 0
    report = run_all(device, args)
    print(json.dumps(_bench_step()._rounded(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
