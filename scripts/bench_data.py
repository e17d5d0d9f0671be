"""Training patches per second of three loaders on a DIV2K-like folder made here (2040 x 1356 PNGs with a
natural 1/f spectrum): (a) our DataModule (decoded cache, memory-mapped crops, whole-batch fetch),
(b) decode the whole PNG pair per sample, (c) load the whole decoded array pair per sample (the EDSR /
PSPL reference's cached mode). HR patch 96, x2, flips and transpose on; one process, then with workers.
Then on-device LR synthesis: batches per second of each degradation (bicubic, bd, dn, realistic) on a
batch of HR patches, on the CPU and, where CUDA is present, on the GPU; the CPU-side random draws (done in
the DataLoader workers during training) are timed on their own.

    python scripts/bench_data.py [--images 4] [--workers 2] [--seconds 5] [--synthesis-only]
    python scripts/bench_data.py --stream [--images 8] [--seconds 2] [--repeats 5]
    python scripts/bench_data.py --scaling [--sizes 25,100,400,800] [--distinct 25] [--plot fig.png]

``--scaling`` measures cost against the number of images: for each size, ``pspl-data prepare`` (decoded
cache) and ``pspl-data optimize`` (litdata) seconds and bytes per image and peak RSS, then for each training
loader (``div2k`` from the cache, ``stream`` from the chunks; 0 and ``--workers`` loader workers, each in a
fresh process) its peak memory, patches/s after the first batch (median of three windows of ``--seconds``)
and seconds to the first batch, once with the
data in the page cache and once with its pages dropped first (``posix_fadvise``). The cache is deleted
before the chunks are written, so each is measured alone. It checks free disk first (800 images need about
13 GB at once) and deletes what it made. Its last line is one JSON object with
``scaling`` (per size) and ``ratios_largest_to_smallest``.

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
import subprocess
import sys
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


# --- --scaling: cost against the number of images ----------------------------------------------------------
SCALING_SIZES = (25, 100, 400, 800)
LOADERS = ("div2k_w0", "div2k_w2", "stream_w0", "stream_w2")


def scaling_disk_need(images: int, size: tuple[int, int], scale: int, png_bytes: int) -> int:
    """Bytes the largest size needs at once: its PNGs and the larger of the decoded cache (HR + MATLAB-bicubic
    LR arrays) and the uint8 litdata chunks (one HR array per image); the two are never on disk together."""
    hr = size[0] * size[1] * 3
    return images * (png_bytes + hr + hr // (scale * scale)) + (1 << 30)


def page_cache(folder: Path, resident: bool) -> None:
    """Read every file of ``folder`` into the page cache (``resident``: a machine whose memory holds the
    set, after the first epoch), or write back and drop its pages (a set larger than memory: every patch
    read comes from the disk)."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    os.sync()  # what was just written goes to the disk now, not while a loader is measured
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            if resident:
                while os.read(fd, 1 << 24):
                    pass
            else:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def _pss_mb(pids: list[int]) -> tuple[float, float]:
    """(proportional set size, its anonymous part) of ``pids`` together, MB: shared pages are split between
    the processes; the rest of the total is file pages (memory-mapped cache arrays, libraries), which the
    kernel can drop and read again."""
    total = anon = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                elif line.startswith("Pss_Anon:"):
                    anon += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total / 1024, anon / 1024


def _rss_child(cmd: list[str]) -> tuple[str, float, float, float]:
    """(stdout, wall seconds, peak memory MB, peak anonymous memory MB) of a command; the memory is the
    largest proportional set size of its whole process tree (loader and litdata workers included), sampled
    every 0.2 s (ru_maxrss would count this benchmark's own memory, which the child inherits up to its
    exec)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        peak = peak_anon = 0.0
        while proc.poll() is None:
            total, anon = _pss_mb(_tree(proc.pid))
            peak, peak_anon = max(peak, total), max(peak_anon, anon)
            time.sleep(0.2)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read()[-3000:]}")
        return out.read(), wall, peak, peak_anon


def train_child(loader: str, root: str, images: int, lit: str, workers: int, patch: int, scale: int,
                batch: int, seconds: float) -> dict:
    """In a fresh process: a training DataModule (``div2k``: the decoded cache; ``stream``: litdata chunks),
    seconds from its construction to the first batch, then patches/s after warm-up (the median of three
    windows of ``seconds``)."""
    start = time.perf_counter()
    common = {"scale": scale, "patch_size": patch, "batch_size": batch, "repeat": 20, "num_workers": workers,
              "pin_memory": False, "progress": False, "persistent_workers": workers > 0}
    if loader == "div2k":
        dm = DIV2KDataModule(root=root, train_range=[1, images], val_range=[801, 801],
                             cache_dir=str(Path(root).parent / "cache"), **common)
        rate = patches_per_second
    else:
        from pspl_lightning.data.stream import StreamDataModule

        dm = StreamDataModule(input_dir=lit, val_hr_dir=str(Path(root) / "DIV2K_valid_HR"), cache_dir=None,
                              **common)
        rate = hr_patches_per_second
    dm.prepare_data()
    dm.setup("fit")
    loader_ = dm.train_dataloader()
    next(iter(loader_))
    first = time.perf_counter() - start
    rates = sorted(rate(loader_, seconds) for _ in range(3))  # the median of three windows: one slow
    return {"first_step_s": round(first, 2), "patches_per_s": round(rates[1], 1)}  # window is not the rate


def _measure_loaders(row: dict, loader: str, data: Path, cmd: list[str], workers: int, seconds: float,
                     shape: list[str]) -> None:
    """Into ``row``: for 0 and ``workers`` loader workers, each in a fresh process, peak memory, patches/s
    and seconds to the first batch with ``data`` in the page cache, then patches/s and first batch with its
    pages dropped."""
    for w in (0, workers):
        name = f"{loader}_w{2 if w else 0}"
        for resident in (True, False):
            page_cache(data, resident)
            out, _, rss, anon = _rss_child([*cmd, str(w), *shape, "--seconds", str(seconds)])
            child = json.loads(out.strip().splitlines()[-1])
            if resident:
                row["train_peak_rss_mb"][name] = round(rss, 1)
                row["train_peak_anon_mb"][name] = round(anon, 1)
                row["patches_per_s"][name] = child["patches_per_s"]
                row["first_step_s"][name] = child["first_step_s"]
            else:
                row["patches_per_s_cold"][name] = child["patches_per_s"]
                row["first_step_cold_s"][name] = child["first_step_s"]


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def scaling(sizes: list[int], hw: tuple[int, int], patch: int, scale: int, batch: int, seconds: float,
            distinct: int, work: Path, workers: int) -> dict:
    """Per number of images: prepare and optimize seconds and bytes per image, their peak RSS, and per
    training loader (div2k / stream, 0 and ``workers`` loader workers) peak RSS, patches/s and time to the
    first batch. ``distinct`` images are generated; the others are byte copies of them (decoding and
    writing cost the same per file; generating 800 images here would take half an hour)."""
    import shutil

    python, script = sys.executable, str(Path(__file__).resolve())
    cli = [python, "-m", "pspl_lightning.cli.data"]
    root = work / "DIV2K"
    hr_dir = root / "DIV2K_train_HR"
    make_div2k_folder(root, range(1, min(distinct, max(sizes)) + 1), range(801, 802), size=hw, with_lr=False)
    sample = hr_dir / "0001.png"
    need = scaling_disk_need(max(sizes), hw, scale, sample.stat().st_size)
    free = shutil.disk_usage(work).free
    print(f"--scaling needs about {need / 1e9:.1f} GB free under {work} for {max(sizes)} images; "
          f"{free / 1e9:.1f} GB free", flush=True)
    if free < need:
        raise SystemExit(f"bench_data.py --scaling: {work} has {free / 1e9:.1f} GB free, {max(sizes)} "
                         f"DIV2K-like images need about {need / 1e9:.1f} GB; use --dir on a larger disk or "
                         f"fewer --sizes")
    results: dict[str, dict] = {}
    for n in sizes:
        for i in range(distinct + 1, n + 1):
            target = hr_dir / f"{i:04d}.png"
            if not target.exists():
                shutil.copyfile(hr_dir / f"{(i - 1) % distinct + 1:04d}.png", target)
        only = work / f"hr_{n}"  # optimize's input: exactly these n images (links)
        only.mkdir()
        for i in range(1, n + 1):
            (only / f"{i:04d}.png").symlink_to(hr_dir / f"{i:04d}.png")
        cache, lit = work / "cache", work / f"lit_{n}"
        row: dict = {}
        out, wall, rss, anon = _rss_child([*cli, "prepare", "data=div2k", f"data.root={root}",
                                           f"data.train_range=[1,{n}]", "data.val_range=[801,801]",
                                           f"data.scale={scale}", f"data.patch_size={patch}",
                                           f"data.cache_dir={cache}", f"workers={workers}",
                                           "data.progress=false"])
        seconds_in = float(out.rsplit("ready in ", 1)[1].split()[0])
        row.update(prepare_s_per_image=round(seconds_in / n, 4), prepare_wall_s=round(wall, 1),
                   prepare_peak_rss_mb=round(rss, 1), prepare_peak_anon_mb=round(anon, 1),
                   cache_bytes_per_image=round(_folder_bytes(cache) / (n + 1)))
        for key in ("train_peak_rss_mb", "train_peak_anon_mb", "patches_per_s", "first_step_s",
                    "patches_per_s_cold", "first_step_cold_s"):
            row[key] = {}
        train = [python, script, "--_train-child"]
        _measure_loaders(row, "div2k", cache, [*train, "div2k", str(root), str(n), "-"], workers, seconds,
                         [str(patch), str(scale), str(batch)])
        shutil.rmtree(cache)  # (the chunks are written next: a user trains from one or the other)
        out, wall, rss, anon = _rss_child([*cli, "optimize", f"input={only}", f"output={lit}",
                                           f"workers={workers}", f"min_size={patch}"])
        seconds_in = float(out.rsplit(" in ", 1)[1].split()[0])
        row.update(optimize_s_per_image=round(seconds_in / n, 4), optimize_wall_s=round(wall, 1),
                   optimize_peak_rss_mb=round(rss, 1), optimize_peak_anon_mb=round(anon, 1),
                   stream_bytes_per_image=round(_folder_bytes(lit) / n))
        _measure_loaders(row, "stream", lit, [*train, "stream", str(root), str(n), str(lit)], workers,
                         seconds, [str(patch), str(scale), str(batch)])
        results[str(n)] = row
        print(f"{n} images: {json.dumps(row)}", flush=True)
        shutil.rmtree(lit)
        shutil.rmtree(only)
    return results


def scaling_ratios(results: dict[str, dict]) -> dict:
    """Largest size / smallest size of each per-image cost, rate, RSS and first-step time."""
    small, large = results[min(results, key=int)], results[max(results, key=int)]
    def ratio(big: float, little: float) -> float | None:
        return round(big / little, 3) if little else None  # (None: too small to time)

    ratios = {k: ratio(large[k], small[k]) for k in ("prepare_s_per_image", "optimize_s_per_image")}
    for key in ("patches_per_s", "patches_per_s_cold", "train_peak_rss_mb", "train_peak_anon_mb",
                "first_step_s", "first_step_cold_s"):
        if key not in small or key not in large:  # (anonymous memory, cold pages: not in the first reports)
            continue
        ratios[key] = {n: ratio(large[key][n], small[key][n]) for n in small[key]}
    return ratios


def scaling_markdown(results: dict[str, dict]) -> str:
    """docs/BENCHMARKS.md's two tables of a ``--scaling`` report: preparing, and the training loaders."""
    sizes = sorted(results, key=int)
    lines = ["| images | prepare s/image | optimize s/image | cache MB/image | chunks MB/image "
             "| prepare peak MB | optimize peak MB |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        r = results[n]
        lines.append(f"| {n} | {r['prepare_s_per_image']:.3f} | {r['optimize_s_per_image']:.3f} | "
                     f"{r['cache_bytes_per_image'] / 1e6:.2f} | {r['stream_bytes_per_image'] / 1e6:.2f} | "
                     f"{r['prepare_peak_rss_mb']:.0f} | {r['optimize_peak_rss_mb']:.0f} |")
    loaders = " | ".join(LOADERS)
    for title, keys, fmt in (("patches/s, set in the page cache", ("patches_per_s",), "{:,.0f}"),
                             ("patches/s, pages dropped first", ("patches_per_s_cold",), "{:,.0f}"),
                             ("peak anonymous MB (peak MB with mapped pages)",
                              ("train_peak_anon_mb", "train_peak_rss_mb"), "{:.0f}"),
                             ("first batch s (pages dropped first)", ("first_step_s", "first_step_cold_s"),
                              "{:.2f}")):
        lines += ["", f"| images: {title} | {loaders} |", "|---:|" + "---:|" * len(LOADERS)]
        for n in sizes:
            r = results[n]
            cells = [fmt.format(r[keys[0]][k]) + (f" ({fmt.format(r[keys[1]][k])})" if len(keys) > 1 else "")
                     for k in LOADERS]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_scaling(results: dict[str, dict], path: Path) -> None:
    """Seconds per image (prepare, optimize) and patches/s per loader against images, log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results, key=int)
    x = [int(n) for n in sizes]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for key, label in (("prepare_s_per_image", "pspl-data prepare"), ("optimize_s_per_image",
                                                                        "pspl-data optimize")):
        ax1.plot(x, [results[n][key] for n in sizes], "o-", label=label)
    ax1.set(xscale="log", xlabel="training images", ylabel="seconds per image", ylim=(0, None),
            title="preparing: cost per image")
    for i, name in enumerate(LOADERS):
        ax2.plot(x, [results[n]["patches_per_s"][name] for n in sizes], "o-", color=f"C{i}", label=name)
        if all("patches_per_s_cold" in results[n] for n in sizes):
            ax2.plot(x, [results[n]["patches_per_s_cold"][name] for n in sizes], "x--", color=f"C{i}",
                     label=f"{name}, pages dropped")
    ax2.set(xscale="log", yscale="log", xlabel="training images", ylabel="patches / s",
            title="training loader: patches per second")
    for ax in (ax1, ax2):
        ax.minorticks_off()
        ax.set_xticks(x, [str(v) for v in x])
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    parser.add_argument("--scaling", action="store_true", help="only cost against the number of images")
    parser.add_argument("--sizes", default=",".join(map(str, SCALING_SIZES)),
                        help="--scaling: numbers of training images, comma-separated")
    parser.add_argument("--distinct", type=int, default=25,
                        help="--scaling: images generated; the others are byte copies of them")
    parser.add_argument("--plot", type=Path, default=None, help="--scaling: write the figure here")
    parser.add_argument("--_train-child", nargs=8, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._train_child:
        loader, root, n, lit, w, patch, scale, batch = args._train_child
        report = train_child(loader, root, int(n), lit, int(w), int(patch), int(scale), int(batch),
                             args.seconds)
        print(json.dumps(report))
        return report
    h, w = (int(v) for v in args.size.lower().split("x"))
    if args.scaling:
        sizes = sorted(int(v) for v in args.sizes.split(","))
        workers = min(args.workers, os.cpu_count() or 1)
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="pspl-scaling-") as tmp:
            results = scaling(sizes, (h, w), args.patch, args.scale, args.batch, args.seconds, args.distinct,
                              Path(tmp), workers)
        if args.plot:
            plot_scaling(results, args.plot)
        print(f"\nDIV2K-like {w}x{h} images, HR patch {args.patch}, x{args.scale}, batch {args.batch}, "
              f"{workers} prepare/optimize workers; loaders: div2k (decoded cache) and stream (litdata), "
              f"0 and {workers} loader workers")
        print(f"{'images':>7}{'prep s/img':>11}{'opt s/img':>10}{'cache MB/img':>13}{'chunk MB/img':>13}"
              f"{'prep RSS MB':>12}" + "".join(f"{n + ' p/s':>15}" for n in LOADERS))
        for n, row in results.items():
            print(f"{n:>7}{row['prepare_s_per_image']:>11.3f}{row['optimize_s_per_image']:>10.3f}"
                  f"{row['cache_bytes_per_image'] / 1e6:>13.2f}{row['stream_bytes_per_image'] / 1e6:>13.2f}"
                  f"{row['prepare_peak_rss_mb']:>12.0f}"
                  + "".join(f"{row['patches_per_s'][k]:>15.0f}" for k in LOADERS))
        commit = os.environ.get("PSPL_COMMIT") or subprocess.run(  # PSPL_COMMIT: run from an exported tree
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).resolve().parent).stdout.strip()
        report = {"scaling": results, "ratios_largest_to_smallest": scaling_ratios(results),
                  "config": {"sizes": sizes, "size": [h, w], "distinct": args.distinct, "patch": args.patch,
                             "scale": args.scale, "batch": args.batch, "workers": workers,
                             "seconds": args.seconds, "cpus": os.cpu_count(), "commit": commit,
                             "date": time.strftime("%Y-%m-%d", time.gmtime())}}
        print(json.dumps(report))
        return report
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
