"""Real-world SR evidence: the GAN stage (``recipe=realesrgan``) with a PSPL pixel term against an L1 pixel
term, over several seeds, both fine-tuned from one PSNR-trained generator on the realistic degradation.

    nice -n 10 python scripts/gan_pspl_vs_l1.py --out docs/figures/gan_pspl_vs_l1 --vgg /path/vgg19.pth

CPU-sized by default (sample set, x4, a small generator and discriminator, 64 px HR patches). Without
``--vgg`` (and without torchvision's file in torch's hub cache) the perceptual term runs on a VGG19 with
random weights made here, and the report says so. Writes ``<out>.json`` (every number), ``<out>.md`` (the
table) and ``<out>.png`` (validation crops side by side: LR, PSNR start, L1-GAN, PSPL-GAN, HR).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["data.scale=4", "degradation=realistic", "model=tiny", "model.n_feats=32", "model.n_layers=4",
          "data.patch_size=48", "data.batch_size=4", "logger=csv", "callbacks.progress_bar=null",
          "callbacks.image_panel=null", "trainer=cpu", "schedule.lr_milestones=[]",
          "trainer.enable_model_summary=false"]


def run(args: list[str], folder: Path) -> dict[str, float]:
    """One ``pspl-train`` run in ``folder`` (kept when it finished: the script resumes where it stopped)."""
    metrics = folder / "metrics.json"
    if not (folder / "checkpoints" / "last.ckpt").is_file() or not metrics.is_file():
        cmd = [sys.executable, "-m", "pspl_lightning.cli.train", *args, f"hydra.run.dir={folder}"]
        print(" ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(metrics.read_text())


def last_logged(folder: Path) -> dict[str, float]:
    """The discriminator's loss and mean logits at the last logged step of a GAN run."""
    import csv

    rows = [r for r in csv.DictReader((folder / "csv" / "metrics.csv").open()) if r.get("train/loss_d")]
    return {k: float(rows[-1][f"train/{k}"]) for k in ("loss_d", "d_real", "d_fake")}


def vgg_file(given: str | None, work: Path) -> tuple[Path, str]:
    """The VGG19 file to use and what it is: given, torchvision's cached ImageNet file, or random weights."""
    from pspl_lightning.vgg_weights import cached_vgg19

    if given:
        return Path(given), f"VGG19 weights from {given}"
    if cached_vgg19().is_file():
        return cached_vgg19(), "torchvision's VGG19 IMAGENET1K_V1 (hub cache)"
    from pspl_lightning.losses.perceptual import vgg19_features

    path = work / "vgg19_random.pth"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save({f"features.{k}": v for k, v in vgg19_features().state_dict().items()}, path)
    return path, "a VGG19 with RANDOM weights (no ImageNet weights on this machine): not a perceptual metric"


def crops(runs: dict[str, Path], out_png: Path, size: int = 96) -> None:
    """Side by side crops of the first validation image: LR (nearest), each run's EMA generator, HR."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from PIL import Image

    from pspl_lightning.inference.loading import load_network

    first = next(iter(runs.values())) / "checkpoints" / "last.ckpt"
    cfg = OmegaConf.create(torch.load(first, map_location="cpu", weights_only=False)["pspl_config"])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(dm.on_before_batch_transfer(next(iter(dm.val_dataloader()[0])), 0), 0)
    lr, hr = (t.float() / 255 if t.dtype == torch.uint8 else t for t in batch[:2])
    h, w = hr.shape[-2:]
    y, x = (h - size) // 2 // 4 * 4, (w - size) // 2 // 4 * 4
    cols = [torch.nn.functional.interpolate(lr, scale_factor=4, mode="nearest")]
    with torch.no_grad():
        cols += [load_network(f / "checkpoints" / "last.ckpt").net(lr).clamp(0, 1) for f in runs.values()]
    cols.append(hr)
    tiles = [c[0, :, y : y + size, x : x + size].permute(1, 2, 0).mul(255).round().byte().numpy()
             for c in cols]
    gap = np.full((size, 4, 3), 255, np.uint8)
    row = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
    Image.fromarray(row).resize((row.shape[1] * 2, size * 2), Image.NEAREST).save(out_png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/figures/gan_pspl_vs_l1")
    parser.add_argument("--work", default="outputs/gan_pspl_vs_l1")
    parser.add_argument("--vgg", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--psnr-steps", type=int, default=100)
    parser.add_argument("--gan-steps", type=int, default=40)
    parser.add_argument("--disc-feat", type=int, default=16)
    parser.add_argument("--ema-decay", type=float, default=0.9)  # 0.999 (Real-ESRGAN) spans ~1000 steps
    args = parser.parse_args()
    work, out = (ROOT / args.work).resolve(), ROOT / args.out
    work.mkdir(parents=True, exist_ok=True)
    vgg, vgg_note = vgg_file(args.vgg, work)
    psnr_dir = work / "psnr"
    start = run([*COMMON, "loss=l1", "schedule.lr=5e-4", f"trainer.max_steps={args.psnr_steps}",
                 f"schedule.val_every_n_steps={args.psnr_steps}", "seed=0"], psnr_dir)
    init = psnr_dir / "checkpoints" / "last.ckpt"
    results: dict[str, dict[int, dict[str, float]]] = {"pspl": {}, "l1": {}}
    for seed in args.seeds:
        for pixel in ("pspl", "l1"):
            m = run([*COMMON, "recipe=realesrgan", f"loss={pixel}", f"loss.perceptual.weights={vgg}",
                     f"discriminator.num_feat={args.disc_feat}", f"module.ema_decay={args.ema_decay}",
                     f"init_from={init}", f"seed={seed}",
                     f"trainer.max_steps={args.gan_steps}", f"schedule.val_every_n_steps={args.gan_steps}"],
                    work / f"{pixel}_seed{seed}")
            results[pixel][seed] = {"psnr_y": m["val/psnr_y"], "ssim_y": m["val/ssim_y"],
                                    **last_logged(work / f"{pixel}_seed{seed}")}
    runs = [r for arm in results.values() for r in arm.values()]
    summary: dict[str, dict[str, float]] = {"last_loss_d": {"min": min(r["loss_d"] for r in runs),
                                                            "max": max(r["loss_d"] for r in runs)}}
    for key in ("psnr_y", "ssim_y"):
        diffs = [results["pspl"][s][key] - results["l1"][s][key] for s in args.seeds]
        summary[key] = {"pspl_mean": statistics.fmean(results["pspl"][s][key] for s in args.seeds),
                        "l1_mean": statistics.fmean(results["l1"][s][key] for s in args.seeds),
                        "mean_diff": statistics.fmean(diffs), "pspl_ahead": sum(d > 0 for d in diffs)}
    report = {"psnr_start": {"psnr_y": start["val/psnr_y"], "ssim_y": start["val/ssim_y"]}, "runs": results,
              "summary": summary, "seeds": args.seeds, "vgg": vgg_note, "psnr_steps": args.psnr_steps,
              "gan_steps": args.gan_steps, "ema_decay": args.ema_decay,
              "settings": COMMON + [f"discriminator.num_feat={args.disc_feat}"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"GAN stage ({args.gan_steps} generator steps) from one L1 PSNR run ({args.psnr_steps} steps), "
             f"sample set x4, realistic degradation; perceptual term on {vgg_note}.", "",
             "| seed | L1-GAN PSNR-Y | PSPL-GAN PSNR-Y | L1-GAN SSIM-Y | PSPL-GAN SSIM-Y |",
             "|---|---|---|---|---|"]
    for s in args.seeds:
        lines.append(f"| {s} | {results['l1'][s]['psnr_y']:.3f} | {results['pspl'][s]['psnr_y']:.3f} | "
                     f"{results['l1'][s]['ssim_y']:.4f} | {results['pspl'][s]['ssim_y']:.4f} |")
    lines.append(f"| start (PSNR run) | {start['val/psnr_y']:.3f} | | {start['val/ssim_y']:.4f} | |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    seed = args.seeds[0]
    crops({"psnr": psnr_dir, "l1": work / f"l1_seed{seed}", "pspl": work / f"pspl_seed{seed}"},
          out.with_suffix(".png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
