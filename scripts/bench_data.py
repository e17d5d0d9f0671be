"""Training patches per second of three loaders on a DIV2K-like folder made here (2040 x 1356 PNGs with a
natural 1/f spectrum): (a) our DataModule (decoded cache, memory-mapped crops, whole-batch fetch),
(b) decode the whole PNG pair per sample, (c) load the whole decoded array pair per sample (the EDSR /
PSPL reference's cached mode). HR patch 96, x2, flips and transpose on; one process, then with workers.
Then on-device LR synthesis: batches per second of each degradation (bicubic, bd, dn, realistic) on a
batch of HR patches, on the CPU and, where CUDA is present, on the GPU; the CPU-side random draws (done in
the DataLoader workers during training) are timed on their own.

    python scripts/bench_data.py [--images 4] [--workers 2] [--seconds 5] [--synthesis-only]
    python scripts/bench_data.py --stream [--images 8] [--seconds 2] [--repeats 5]

``--stream`` compares, in one process, HR-only patches (the degradation-on-device path) streamed from litdata
chunks (``pspl-data optimize``, both formats: decoded uint8 and PNG) with the decoded cache's: optimize time,
size on disk, patches per second; its JSON holds ``stream_vs_cache``, the median over ``--repeats``
alternating measurements of (uint8 stream patches/s) / (cache patches/s).

Prints tables, then (last line) one JSON object: ``patches_per_s`` per loader and mode,
``speedup_vs_whole_array``, ``synthesis_batches_per_s`` per device and degradation (draw + apply, one
thread on the CPU) and ``synthesis_draw_ms`` (the CPU draws alone, per batch).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pspl_lightning.data import DIV2KDataModule
from pspl_lightning.data.datasets import _to_chw, augment_pair
from pspl_lightning.data.io import read_image
from pspl_lightning.data.synthetic import make_div2k_folder, natural_image
from pspl_lightning.degradations import Bicubic, BlurDown, NoisyBicubic, Realistic

DEGRADATIONS = {"bicubic": Bicubic, "bd": BlurDown, "dn": NoisyBicubic, "realistic": Realistic}


class _WholeImagePerSample(Dataset):
    """The reference's loaders: a whole LR/HR pair is loaded for every patch (``load`` decides how)."""

    def __init__(self, files: list[tuple[Path, Path]], load, scale: int, patch: int, repeat: int) -> None:
        self.files, self.load, self.scale, self.patch, self.repeat = files, load, scale, patch, repeat

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        lr_file, hr_file = self.files[index % len(self.files)]
        lr, hr = self.load(lr_file), self.load(hr_file)
        lp, s = self.patch // self.scale, self.scale
        top = int(torch.randint(0, lr.shape[0] - lp + 1, ()))
        left = int(torch.randint(0, lr.shape[1] - lp + 1, ()))
        lr = lr[top : top + lp, left : left + lp]
        hr = hr[top * s : (top + lp) * s, left * s : (left + lp) * s]
        lr, hr = augment_pair(lr, hr, *(torch.rand(3) < 0.5).tolist())
        return _to_chw(lr), _to_chw(hr)


def patches_per_second(loader: DataLoader, seconds: float, min_batches: int = 2) -> float:
    """Patches/s after one warm-up batch (which also starts the workers), over >= ``seconds``; an epoch
    that ends first is followed by the next."""
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    while True:
        try:
            lr, hr = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        assert hr.shape[-1] == 2 * lr.shape[-1]
        n += lr.shape[0]
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= min_batches * lr.shape[0]:
            return n / elapsed


def hr_patches_per_second(loader: DataLoader, seconds: float) -> float:
    """Patches/s of an HR-only loader (``HRBatch`` items) after one warm-up batch, over >= ``seconds``."""
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n == 0:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += batch.hr.shape[0]
    return n / (time.perf_counter() - start)


def stream_vs_cache(images: int, size: tuple[int, int], patch: int, scale: int, batch: int, seconds: float,
                    repeats: int, work: Path) -> dict:
    """Optimize a DIV2K-like folder into litdata chunks (uint8 and PNG) and time, in this process, patches
    from those chunks against patches from the decoded cache (same images, sampler, degradation draws)."""
    from pspl_lightning.data import FolderDataModule
    from pspl_lightning.data.optimize import optimize_folder
    from pspl_lightning.data.stream import StreamDataModule

    root = make_div2k_folder(work / "DIV2K", range(1, images + 1), range(801, 802), size=size, with_lr=False)
    hr_dir = root / "DIV2K_train_HR"
    png_bytes = sum(f.stat().st_size for f in hr_dir.iterdir())
    common = {"scale": scale, "patch_size": patch, "batch_size": batch, "repeat": 20, "num_workers": 0,
              "pin_memory": False, "progress": False, "degradation": BlurDown(scale),
              "val_hr_dir": str(root / "DIV2K_valid_HR")}
    report: dict = {"source_png_bytes": png_bytes, "optimize_s": {}, "chunk_bytes": {},
                    "stream_patches_per_s": {}}
    streams = {}
    for fmt in ("uint8", "png"):
        result = optimize_folder(hr_dir, str(work / f"lit_{fmt}"), workers=min(4, images), fmt=fmt,
                                 progress=False)
        report["optimize_s"][fmt], report["chunk_bytes"][fmt] = round(result.seconds, 2), result.bytes_on_disk
        # 2 images held at once (4 kept): fewer than the images made, so every image is read once per epoch
        # as with a large set, instead of all of them staying in memory
        dm = StreamDataModule(input_dir=str(work / f"lit_{fmt}"), group_images=2, **common)
        dm.setup("fit")
        streams[fmt] = dm.train_dataloader()
    cache_dm = FolderDataModule(hr_dir=str(hr_dir), cache_dir=str(work / "cache"), **common)
    cache_dm.prepare_data()
    cache_dm.setup("fit")
    cache = cache_dm.train_dataloader()
    report["stream_patches_per_s"]["png"] = round(hr_patches_per_second(streams["png"], seconds), 1)
    cache_rates, stream_rates = [], []
    for _ in range(repeats):  # alternating, so that a change in the machine's load hits both alike
        cache_rates.append(hr_patches_per_second(cache, seconds))
        stream_rates.append(hr_patches_per_second(streams["uint8"], seconds))
    report["stream_patches_per_s"]["uint8"] = round(float(np.median(stream_rates)), 1)
    report["cache_patches_per_s"] = round(float(np.median(cache_rates)), 1)
    report["stream_vs_cache"] = round(float(np.median(np.array(stream_rates) / np.array(cache_rates))), 3)
    return report


def _timed(fn, seconds: float, sync, min_calls: int = 3) -> float:
    """Median seconds per call of ``fn`` over >= ``seconds`` (after one warm-up call)."""
    fn()
    sync()
    times, start = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def synthesis(batch: int, patch: int, scale: int, seconds: float) -> tuple[dict, dict]:
    """({device: {degradation: batches/s}}, {degradation: CPU draw ms}) on natural-image HR patches."""
    img = natural_image(patch * 4, patch * 4, seed=1)
    rng = np.random.default_rng(0)
    tops = rng.integers(0, patch * 3, (batch, 2))
    hr_cpu = torch.from_numpy(np.stack([img[t:t + patch, u:u + patch] for t, u in tops])).permute(0, 3, 1, 2)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rates: dict[str, dict[str, float]] = {}
    draw_ms: dict[str, float] = {}
    threads = torch.get_num_threads()
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        hr = hr_cpu.contiguous().to(device)
        torch.set_num_threads(1 if device == "cpu" else threads)  # the CPU figure: one thread, as a worker
        for name, cls in DEGRADATIONS.items():
            deg = cls(scale)
            steps = iter(range(1 << 30))  # new keys every batch, as in training
            rates.setdefault(device, {})[name] = 1.0 / _timed(
                lambda deg=deg, hr=hr, steps=steps: deg(hr, torch.arange(batch) + batch * next(steps)),
                seconds, sync)
            if device == "cpu":
                draw_ms[name] = 1e3 * _timed(lambda deg=deg: deg.draw(torch.arange(batch), (patch, patch)),
                                             seconds / 2, sync)
    torch.set_num_threads(threads)
    return rates, draw_ms


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="training images to make")
    parser.add_argument("--size", default="1356x2040", help="HR image size HxW (DIV2K: about 1356x2040)")
    parser.add_argument("--patch", type=int, default=96, help="HR patch side")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per loader and mode")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--synthesis-only", action="store_true", help="only the on-device synthesis rows")
    parser.add_argument("--stream", action="store_true", help="only litdata streaming vs the decoded cache")
    parser.add_argument("--repeats", type=int, default=5, help="alternating measurements for --stream")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    if args.stream:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            report = stream_vs_cache(args.images, (h, w), args.patch, args.scale, args.batch, args.seconds,
                                     args.repeats, Path(tmp))
        print(f"\n{args.images} DIV2K-like {w}x{h} images ({report['source_png_bytes'] / 1e6:.1f} MB PNG), "
              f"HR patch {args.patch}, batch {args.batch}, one process; patches per second")
        print(f"{'source':<22}{'on disk MB':>12}{'optimize s':>12}{'patches/s':>12}")
        for fmt in ("uint8", "png"):
            print(f"{'litdata ' + fmt:<22}{report['chunk_bytes'][fmt] / 1e6:>12.1f}"
                  f"{report['optimize_s'][fmt]:>12.1f}{report['stream_patches_per_s'][fmt]:>12.0f}")
        print(f"{'decoded cache':<22}{'':>12}{'':>12}{report['cache_patches_per_s']:>12.0f}")
        print(f"stream_vs_cache (uint8 stream / cache, median of {args.repeats}): "
              f"{report['stream_vs_cache']}")
        report["config"] = {"images": args.images, "size": [h, w], "patch": args.patch, "scale": args.scale,
                            "batch": args.batch, "repeats": args.repeats, "cpus": os.cpu_count()}
        print(json.dumps(report))
        return report
    rates, draw_ms = synthesis(args.batch, args.patch, args.scale, args.seconds)
    print(f"\nLR synthesis, batch {args.batch} of HR {args.patch}x{args.patch}, x{args.scale}; batches per "
          f"second (CPU: one thread; draws: CPU ms per batch, made in the loader workers when training)")
    print(f"{'device':<10}" + "".join(f"{n:>12}" for n in DEGRADATIONS))
    for device, row in rates.items():
        print(f"{device:<10}" + "".join(f"{row[n]:>12.1f}" for n in DEGRADATIONS))
    print(f"{'draw ms':<10}" + "".join(f"{draw_ms[n]:>12.2f}" for n in DEGRADATIONS))
    synthesis_report = {
        "synthesis_batches_per_s": {d: {n: round(v, 2) for n, v in row.items()} for d, row in rates.items()},
        "synthesis_draw_ms": {n: round(v, 3) for n, v in draw_ms.items()},
    }
    if args.synthesis_only:
        config = {"patch": args.patch, "scale": args.scale, "batch": args.batch, "cpus": os.cpu_count(),
                  "cuda": torch.cuda.is_available()}
        report = {**synthesis_report, "config": config}
        print(json.dumps(report))
        return report

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "DIV2K"
        t0 = time.perf_counter()
        make_div2k_folder(root, range(1, args.images + 1), range(801, 802), size=(h, w), scales=(args.scale,))
        print(f"made {args.images} DIV2K-like {w}x{h} PNGs in {time.perf_counter() - t0:.1f} s under {root}")
        files = [(root / "DIV2K_train_LR_bicubic" / f"X{args.scale}" / f"{i:04d}x{args.scale}.png",
                  root / "DIV2K_train_HR" / f"{i:04d}.png") for i in range(1, args.images + 1)]
        arrays = Path(tmp) / "whole_arrays"
        arrays.mkdir()
        npy_files = []
        for lr_file, hr_file in files:
            pair = []
            for f in (lr_file, hr_file):
                np.save(arrays / f"{f.stem}.npy", read_image(f))
                pair.append(arrays / f"{f.stem}.npy")
            npy_files.append(tuple(pair))

        repeat = 100_000
        results: dict[str, dict[str, float]] = {}
        for workers in (0, args.workers):
            mode = "1 process" if workers == 0 else f"{workers} workers"
            dm = DIV2KDataModule(root=str(root), train_range=[1, args.images], val_range=[801, 801],
                                 cache_dir=str(Path(tmp) / "cache"), scale=args.scale, patch_size=args.patch,
                                 batch_size=args.batch, repeat=repeat, num_workers=workers, pin_memory=False,
                                 progress=False)
            t0 = time.perf_counter()
            dm.prepare_data()
            dm.setup("fit")
            if workers == 0:
                print(f"decoded cache built in {time.perf_counter() - t0:.1f} s ({args.images + 1} pairs)")
            crop = (args.scale, args.patch, repeat)
            loaders = {
                "ours (mmap cache)": dm.train_dataloader(),
                "decode PNG per sample": _WholeImagePerSample(files, read_image, *crop),
                "whole array per sample": _WholeImagePerSample(npy_files, np.load, *crop),
            }
            for name, loader in loaders.items():
                if not isinstance(loader, DataLoader):
                    loader = DataLoader(loader, batch_size=args.batch, shuffle=True, drop_last=True,
                                        num_workers=workers, persistent_workers=workers > 0)
                results.setdefault(name, {})[mode] = patches_per_second(loader, args.seconds)
                del loader

    modes = list(next(iter(results.values())))
    print(f"\nHR patch {args.patch}, x{args.scale}, batch {args.batch}, augmentation on; patches per second")
    print(f"{'loader':<26}" + "".join(f"{m:>14}" for m in modes))
    for name, row in results.items():
        print(f"{name:<26}" + "".join(f"{row[m]:>14.0f}" for m in modes))
    ours, whole = results["ours (mmap cache)"], results["whole array per sample"]
    speedup = {m: ours[m] / whole[m] for m in modes}
    print("speed-up over the whole-array loader: " + ", ".join(f"{m}: {v:.1f}x" for m, v in speedup.items()))
    report = {
        "patches_per_s": {name: {m: round(v, 1) for m, v in row.items()} for name, row in results.items()},
        "speedup_vs_whole_array": {m: round(v, 2) for m, v in speedup.items()},
        **synthesis_report,
        "config": {"images": args.images, "size": [h, w], "patch": args.patch, "scale": args.scale,
                   "batch": args.batch, "workers": args.workers, "cpus": os.cpu_count()},
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
