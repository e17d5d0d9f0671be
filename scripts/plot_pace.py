"""Figures of the PSPL pace: the weight as a function of SSIM at several training steps, and the weight
maps of a photograph against a degraded copy at those steps (the figure of the paper).

    python scripts/plot_pace.py --out figures/               # reference settings, scikit-image astronaut
    python scripts/plot_pace.py --steps 0 999 9999 --alpha 0.3 --image photo.png --out figures/

Writes ``pace_curves.png`` and ``pace_maps.png`` into ``--out`` (existing files are kept unless
``--overwrite``). Sigma comes from :meth:`PSPLLoss.sigma_at`, the maps from :meth:`PSPLLoss.weight_map`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage import data as skdata  # noqa: E402

from pspl_lightning.cli.failures import one_line_failures  # noqa: E402
from pspl_lightning.data.io import read_image  # noqa: E402
from pspl_lightning.errors import OutputExistsError  # noqa: E402
from pspl_lightning.imresize import (  # noqa: E402
    imresize,  # noqa: E402
    make_lr,
    modcrop,
)
from pspl_lightning.losses import PSPLLoss  # noqa: E402

DEFAULT_STEPS = (249, 499, 999, 1999, 3999)  # sigma 0.25, 0.5, 1, 2, 4 with the reference pace


def load_photo(name_or_path: str, crop: int | None) -> np.ndarray:
    """An RGB uint8 image: a file, or the name of a scikit-image photograph; centre-cropped to ``crop``."""
    if Path(name_or_path).is_file():
        img = read_image(name_or_path)
    elif hasattr(skdata, name_or_path):
        img = getattr(skdata, name_or_path)()
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"--image {name_or_path}: that scikit-image picture is not an RGB photograph")
    else:
        raise FileNotFoundError(f"--image {name_or_path}: neither a file nor a scikit-image photograph name")
    if crop:
        h, w = img.shape[:2]
        top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        img = img[top : top + crop, left : left + crop]
    return img


def degrade(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR modcropped, its MATLAB-bicubic down-and-up copy): the stand-in for an early network output."""
    hr = modcrop(hr, scale)
    up = imresize(make_lr(hr, scale), float(scale))
    return hr, np.clip(np.round(up), 0, 255).astype(np.uint8)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def _check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")


def plot_curves(loss: PSPLLoss, steps: Sequence[int], out: Path) -> None:
    """Weight versus SSIM, one curve per step."""
    ssim = np.linspace(-1.0, 1.0, 401)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for step in steps:
        sigma = loss.sigma_at(step)
        weight = loss.max_weight * np.exp(-(((ssim + 1.0) / sigma) ** 2))
        ax.plot(ssim, weight, label=f"step {step:,} (sigma {sigma:.3g})")
    ax.set(xlabel="SSIM of the pixel", ylabel="PSPL weight", xlim=(-1, 1), ylim=(0, loss.max_weight * 1.05),
           title=f"PSPL weight: alpha={loss.alpha:g}, beta={loss.beta:g}, step_unit={loss.step_unit}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_maps(loss: PSPLLoss, steps: Sequence[int], hr: np.ndarray, degraded: np.ndarray,
              out: Path) -> list[float]:
    """HR, degraded copy, and the channel-mean weight map at each step; returns the mean weight per step."""
    hr_t, deg_t = _to_tensor(hr), _to_tensor(degraded)
    n = len(steps) + 2
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.0), dpi=120)
    axes[0].imshow(hr)
    axes[0].set_title("HR")
    psnr = 10 * np.log10(255.0**2 / np.mean((hr.astype(np.float64) - degraded) ** 2))
    axes[1].imshow(degraded)
    axes[1].set_title(f"bicubic ({psnr:.2f} dB)")
    means, image = [], None
    for ax, step in zip(axes[2:], steps, strict=True):
        sigma = loss.sigma_at(step)
        w = loss.weight_map(deg_t, hr_t, sigma)[0].mean(dim=0).numpy()
        means.append(float(w.mean()))
        image = ax.imshow(w, cmap="magma", vmin=0.0, vmax=loss.max_weight)
        ax.set_title(f"step {step:,}\nsigma {sigma:.3g}, mean {w.mean():.2f}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.tolist(), shrink=0.8, label="weight")
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return means


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=list(DEFAULT_STEPS),
                   help="optimizer steps (0-based)")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--max-weight", type=float, default=2.0)
    p.add_argument("--step-unit", type=int, default=1000, help="steps per reference 'epoch' (loss.step_unit)")
    p.add_argument("--ssim-mode", choices=["official", "normalized"], default="official")
    p.add_argument("--image", default="astronaut", help="an image file or a scikit-image photograph name")
    p.add_argument("--scale", type=int, default=4, help="bicubic down/up factor of the degraded copy")
    p.add_argument("--crop", type=int, default=256, help="centre crop side (0: whole image)")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Draw both figures; returns their paths."""
    args = parse_args(argv)
    if any(s < 0 for s in args.steps):
        raise SystemExit(f"--steps must be >= 0, got {args.steps}")
    loss = PSPLLoss(alpha=args.alpha, beta=args.beta, max_weight=args.max_weight, step_unit=args.step_unit,
                    ssim_mode=args.ssim_mode)
    curves, maps = args.out / "pace_curves.png", args.out / "pace_maps.png"
    _check_outputs([curves, maps], args.overwrite)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_curves(loss, args.steps, curves)
    hr, degraded = degrade(load_photo(args.image, args.crop or None), args.scale)
    means = plot_maps(loss, args.steps, hr, degraded, maps)
    for step, mean in zip(args.steps, means, strict=True):
        print(f"step {step:>8,}  sigma {loss.sigma_at(step):8.4g}  mean weight {mean:.4f}")
    print(f"wrote {curves} and {maps}")
    return [curves, maps]


if __name__ == "__main__":
    one_line_failures()(main)(sys.argv[1:])  # a mistake (an existing output): one line, exit status 2
