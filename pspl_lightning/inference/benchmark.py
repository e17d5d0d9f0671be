"""Benchmark evaluation: every image of a set upscaled and scored with the published-table protocol."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pspl_lightning.data.io import write_png
from pspl_lightning.data.pairs import load_pair
from pspl_lightning.inference.upscaler import Upscaler
from pspl_lightning.metrics import psnr_y, ssim_y
from pspl_lightning.metrics.functional import to_uint8


@dataclass
class ImageScore:
    """PSNR/SSIM on Y of one image (border crop = scale, SR rounded to 8 bit)."""

    set: str
    scale: int
    image: str
    psnr_y: float
    ssim_y: float


@dataclass
class SetScore:
    """The mean over the images of one set at one scale (what published tables report)."""

    set: str
    scale: int
    images: int
    psnr_y: float
    ssim_y: float


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img, copy=True, order="C")).permute(2, 0, 1)[None]


def evaluate_set(
    upscaler: Upscaler, set_name: str, files: Sequence[tuple[Path | None, Path]],
    save_dir: Path | None = None, on_image: Callable[[], None] | None = None,
) -> list[ImageScore]:
    """Score every (LR or None, HR) file pair of one set; optionally write the SR images to ``save_dir``."""
    scale, scores = upscaler.scale, []
    for lr_path, hr_path in files:
        lr, hr = load_pair(lr_path, hr_path, scale)  # LR made with MATLAB bicubic when there is none
        sr = upscaler(_to_tensor(lr).float().div_(255.0))
        hr_t = _to_tensor(hr).to(sr.device)
        scores.append(ImageScore(set_name, scale, hr_path.stem, float(psnr_y(sr, hr_t, scale)[0]),
                                 float(ssim_y(sr, hr_t, scale)[0])))
        if save_dir is not None:
            sr8 = to_uint8(sr[0]).permute(1, 2, 0).cpu().numpy()
            write_png(save_dir / f"{hr_path.stem}.png", sr8)
        if on_image is not None:
            on_image()
    return scores


def summarize(scores: Sequence[ImageScore]) -> list[SetScore]:
    """Per (set, scale) means, in first-seen order; PSNR is ``inf`` if an image is reproduced exactly."""
    groups: dict[tuple[str, int], list[ImageScore]] = {}
    for s in scores:
        groups.setdefault((s.set, s.scale), []).append(s)
    return [SetScore(name, scale, len(g), math.fsum(s.psnr_y for s in g) / len(g),
                     math.fsum(s.ssim_y for s in g) / len(g)) for (name, scale), g in groups.items()]


def as_dicts(rows: Sequence[ImageScore | SetScore]) -> list[dict]:
    return [asdict(r) for r in rows]
