"""Cost of PSPL in a training step: EDSR-baseline steps with ``loss=pspl`` vs ``loss=l1``, and the loss alone.

    python scripts/bench_step.py                          # CPU or the visible GPU, the issue's setting
    python scripts/bench_step.py --precision bf16-mixed --channels-last --compile   # GPU fast paths
    python scripts/bench_step.py --skip-steps --variants  # the loss alone: every SSIM variant tried

A step is network forward, loss, backward and an Adam step, with the network and loss built from the
training configs (``model=edsr_baseline``, ``loss=pspl`` / ``loss=l1``) by Hydra, so the figures follow
the configs. The two losses run interleaved (A B A B ...) after a warm-up; the PSPL overhead is the median
over rounds of the paired ratio ``t_pspl / t_l1`` (pairing cancels slow drifts of a shared machine).
The loss alone is forward + backward on the HR-sized batch, timed interleaved beside the reference
method (:class:`ReferencePSPL`), ``loss.ssim_dtype=float64`` and plain L1; ``speedup_vs_*`` are medians
of the paired per-round ratios, ``first_call_s`` includes a compile. Peak memory is the process's peak
RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from pspl_lightning.cli.build import build_module
from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.filters import gaussian_kernel1d
from pspl_lightning.losses import PSPLLoss
from pspl_lightning.losses import ssim as ssim_lib
from pspl_lightning.losses.ssim import C1, C2

AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def compose_train(overrides: list[str]) -> DictConfig:
    """The training config as ``pspl-train <overrides>`` would compose it (no run folder is made).

    ``paths.output_dir`` (Hydra's run folder, unset outside a Hydra run) points to a temporary folder that
    nothing writes to, so that the module's run config resolves.
    """
    output_dir = Path(tempfile.gettempdir()) / "pspl_bench_step"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=[f"paths.output_dir={output_dir}", *overrides])


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


LOSS_STEP = 500  # the optimizer step whose sigma the loss-alone timings use (0.501 with the defaults)


def loss_only(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device, batch: int,
              size: int) -> Callable[[], None]:
    """Forward + backward of ``loss_fn`` on a B x 3 x size x size batch (the SR output needs a gradient)."""
    gen = torch.Generator().manual_seed(1)
    hr = torch.rand(batch, 3, size, size, generator=gen).to(device)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=gen).to(device)).requires_grad_(True)
    if isinstance(loss_fn, PSPLLoss):
        loss_fn.set_step(LOSS_STEP)

    def run() -> None:
        sr.grad = None
        loss_fn(sr, hr).backward()

    return run


class ReferencePSPL(torch.nn.Module):
    """The reference repository's method, re-implemented cleanly, to time against in the same process.

    SSIM map of the images scaled to 0..255 by depthwise 11 x 11 float32 convolutions (Gaussian sigma 1.5,
    zero padding 5, the [0, 1] constants), computed with autograd on the SR output and then detached;
    weights ``max_weight * exp(-((ssim + 1) / sigma)^2)``; L1 of the weighted images on 0..255, divided by
    255 to compare with :class:`PSPLLoss` (the same value wherever float32 SSIM is exact). The images go
    channels_last first: PyTorch's depthwise convolution is 5-6x faster so on this CPU (oneDNN) than in
    NCHW (measured 21 vs 124 ms a call), so the comparison is with the reference's fastest layout.
    """

    def __init__(self, sigma: float, max_weight: float = 2.0, channels: int = 3) -> None:
        super().__init__()
        g = gaussian_kernel1d(11, 1.5)
        self.register_buffer("window", torch.outer(g, g).expand(channels, 1, 11, 11).contiguous())
        self.sigma, self.max_weight, self.channels = sigma, max_weight, channels

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        x, y = (t.mul(255.0).contiguous(memory_format=torch.channels_last) for t in (hr, sr))

        def filt(t: torch.Tensor) -> torch.Tensor:
            return F.conv2d(t, self.window, padding=5, groups=self.channels)

        mu_x, mu_y = filt(x), filt(y)
        var_x, var_y, cov = filt(x * x) - mu_x**2, filt(y * y) - mu_y**2, filt(x * y) - mu_x * mu_y
        ssim = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
        w = (self.max_weight * torch.exp(-(((ssim + 1) / self.sigma) ** 2))).detach()
        return F.l1_loss(y * w, x * w) / 255.0


def _unfold_row_stats(xp: torch.Tensor, yp: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """Level 1 of the exact method as 11-wide unfold + sum reductions (a variant tried; see --variants)."""
    r, w = len(taps) // 2, xp.shape[-1] - len(taps) + 1
    g = torch.tensor(taps, dtype=xp.dtype, device=xp.device)
    ex = xp.unfold(-1, len(taps), 1) - xp[..., r : r + w, None]
    ey = yp.unfold(-1, len(taps), 1) - yp[..., r : r + w, None]
    ep, ed = ex + ey, ex - ey
    s1p, s2p, s1d, s2d = (ep * g).sum(-1), (ep * ep * g).sum(-1), (ed * g).sum(-1), (ed * ed * g).sum(-1)
    return torch.stack((s1p, s2p - s1p * s1p, s1d, s2d - s1d * s1d))


def _unfold_column_stats(xp: torch.Tensor, yp: torch.Tensor, rows: torch.Tensor, taps: tuple[float, ...],
                         c1: float, c2: float) -> torch.Tensor:
    """Level 2 of the exact method as unfold + sum reductions over the column windows."""
    r = len(taps) // 2
    h, w = xp.shape[-2] - 2 * r, xp.shape[-1] - 2 * r
    g = torch.tensor(taps, dtype=xp.dtype, device=xp.device)
    xc, yc = xp[..., r : r + w], yp[..., r : r + w]
    off_p, var_ph, off_d, var_dh = rows.unbind(0)

    def win(t: torch.Tensor) -> torch.Tensor:
        return t.unfold(-2, len(taps), 1)

    x0, y0, op0, od0 = xc[:, r : r + h], yc[:, r : r + h], off_p[:, r : r + h], off_d[:, r : r + h]
    ex, ey = win(xc) - x0[..., None], win(yc) - y0[..., None]
    ap, ad = (ex + ey) + (win(off_p) - op0[..., None]), (ex - ey) + (win(off_d) - od0[..., None])
    t1p, t2p, t1d, t2d = (ap * g).sum(-1), (ap * ap * g).sum(-1), (ad * g).sum(-1), (ad * ad * g).sum(-1)
    var_p = (win(var_ph) * g).sum(-1) + (t2p - t1p * t1p)
    var_d = (win(var_dh) * g).sum(-1) + (t2d - t1d * t1d)
    mu_p, mu_d = (x0 + y0) + (op0 + t1p), (x0 - y0) + (od0 + t1d)
    return ssim_lib.ssim_from_terms(mu_p, mu_d, var_p, var_d, c1, c2, plus_one=True)


def _padded(x: torch.Tensor, y: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, c, h, w = x.shape
    return tuple(F.pad(t.reshape(b * c, h, w).float(), (r, r, r, r)) for t in (x, y))


def ssim_plus_one_variants() -> dict[str, Callable[[torch.Tensor, torch.Tensor, float, float], torch.Tensor]]:
    """SSIM + 1 of (hr, sr) by each exact-float32 variant tried (the default is ``exact_compiled``).

    Each maps ``(hr, sr, c1, c2)`` to a B x C x H x W float32 map.
    """
    taps = tuple(gaussian_kernel1d(11, 1.5, dtype=torch.float64).tolist())
    plain_rows = torch.compile(ssim_lib._row_stats, dynamic=False)
    plain_columns = torch.compile(ssim_lib._column_stats, dynamic=False)
    unfold_rows = torch.compile(_unfold_row_stats, dynamic=False)
    unfold_columns = torch.compile(_unfold_column_stats, dynamic=False)

    def one_graph(x: torch.Tensor, y: torch.Tensor, c1: float, c2: float) -> torch.Tensor:
        xp, yp = _padded(x, y, 5)
        return ssim_lib._exact_kernels(xp, yp, taps, c1, c2, True)

    one_graph_compiled = torch.compile(one_graph, dynamic=False, options=ssim_lib.INDUCTOR_OPTIONS)

    def with_kernels(rows: Callable, columns: Callable, extra: tuple = ()) -> Callable:
        def run(x: torch.Tensor, y: torch.Tensor, c1: float, c2: float) -> torch.Tensor:
            xp, yp = _padded(x, y, 5)
            return columns(xp, yp, rows(xp, yp, taps), taps, c1, c2, *extra).view(x.shape)
        return run

    return {
        "exact_eager": lambda x, y, c1, c2: ssim_lib.ssim_map_exact(x, y, c1=c1, c2=c2, plus_one=True,
                                                                    backend="eager"),
        "exact_compiled_one_graph": lambda x, y, c1, c2: one_graph_compiled(x, y, c1, c2).view(x.shape),
        "exact_compiled_inductor_defaults": with_kernels(plain_rows, plain_columns, (True,)),
        "exact_compiled_unfold_sums": with_kernels(unfold_rows, unfold_columns),
        "exact_compiled": lambda x, y, c1, c2: ssim_lib.ssim_map_exact(x, y, c1=c1, c2=c2, plus_one=True,
                                                                       backend="compiled"),
    }


def weighted_l1(plus_one: Callable, sigma: float, official: bool = True,
                max_weight: float = 2.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A PSPL L1 loss whose weights come from the SSIM + 1 map ``plus_one`` (for timing variants)."""
    scale = 255.0**2 if official else 1.0

    def loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            s1 = plus_one(hr.detach(), sr.detach(), C1 / scale, C2 / scale)
            w = s1.div_(sigma).square_().neg_().exp_().mul_(max_weight)
        return ((sr - hr).abs() * w).mean()

    return loss


def _paired_speedup(slow: list[float], fast: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(slow, fast, strict=True))


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
    parser.add_argument("--variants", action="store_true",
                        help="also time every exact-float32 SSIM variant tried (compiles each: minutes)")
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
    }
    pspl_loss = instantiate(cfg_pspl.loss).to(device)
    loss_fns = {"pspl": loss_only(pspl_loss, device, args.batch, hr_size)}
    if isinstance(pspl_loss, PSPLLoss):
        result["ssim_dtype"] = pspl_loss.ssim_dtype_name
        start = time.perf_counter()
        loss_fns["pspl"]()  # the first call compiles the exact kernels (cached on disk for later runs)
        sync(device)
        result["first_call_s"] = time.perf_counter() - start
        sigma = pspl_loss.sigma_at(LOSS_STEP)
        reference = ReferencePSPL(sigma, pspl_loss.max_weight).to(device)
        loss_fns["reference"] = loss_only(reference, device, args.batch, hr_size)
        float64 = instantiate(cfg_pspl.loss, ssim_dtype="float64").to(device)
        loss_fns["float64"] = loss_only(float64, device, args.batch, hr_size)
        if args.variants:
            float32 = instantiate(cfg_pspl.loss, ssim_dtype="float32").to(device)
            loss_fns["float32"] = loss_only(float32, device, args.batch, hr_size)
            official = pspl_loss.ssim_mode == "official"
            for name, fn in ssim_plus_one_variants().items():
                variant = weighted_l1(fn, sigma, official, pspl_loss.max_weight)
                loss_fns[name] = loss_only(variant, device, args.batch, hr_size)
    loss_fns["l1"] = loss_only(instantiate(cfg_l1.loss).to(device), device, args.batch, hr_size)
    loss_wall, loss_cpu = interleaved(loss_fns, args.loss_rounds, 3, device)
    result["loss_ms"] = statistics.median(loss_wall["pspl"]) * 1e3
    result["l1_loss_ms"] = statistics.median(loss_wall["l1"]) * 1e3
    result["loss_cpu_ms"] = statistics.median(loss_cpu["pspl"]) * 1e3
    result["l1_loss_cpu_ms"] = statistics.median(loss_cpu["l1"]) * 1e3
    print(f"loss alone, {args.batch} x 3 x {hr_size} x {hr_size}, forward + backward (median of "
          f"{args.loss_rounds}): PSPL {result['loss_ms']:.2f} ms, L1 {result['l1_loss_ms']:.2f} ms "
          f"(CPU time: PSPL {result['loss_cpu_ms']:.2f} ms, L1 {result['l1_loss_cpu_ms']:.2f} ms)")
    for name in ("reference", "float64"):
        if name in loss_wall:
            result[f"{name}_loss_ms"] = statistics.median(loss_wall[name]) * 1e3
            result[f"speedup_vs_{name}"] = _paired_speedup(loss_wall[name], loss_wall["pspl"])
            print(f"  {name:<9} {result[f'{name}_loss_ms']:8.2f} ms: the default "
                  f"({result.get('ssim_dtype')}) is {result[f'speedup_vs_{name}']:.2f}x faster (median of "
                  f"paired ratios)")
    if args.variants:
        result["variants_ms"] = {name: statistics.median(times) * 1e3 for name, times in loss_wall.items()}
        result["variants_cpu_ms"] = {name: statistics.median(times) * 1e3 for name, times in loss_cpu.items()}
        for name, ms in result["variants_ms"].items():
            print(f"  {name:<34} {ms:8.2f} ms  (CPU {result['variants_cpu_ms'][name]:.2f} ms)")

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
    print(json.dumps(_rounded(result)))


def _rounded(value: object) -> object:
    """``value`` with every float rounded to 4 decimals (nested dicts included), for the JSON line."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    main()
