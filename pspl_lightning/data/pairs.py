"""Loading LR/HR file pairs into aligned uint8 arrays, with the checks that name the offending files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pspl_lightning.data.datasets import ImagePair
from pspl_lightning.data.io import read_image

PathPair = tuple[Path, Path]  # (LR file, HR file)


def align_pair(lr: np.ndarray, hr: np.ndarray, scale: int, lr_path: Path, hr_path: Path) -> ImagePair:
    """Crop HR to ``scale x`` the LR size (the benchmark "modcrop"); any other mismatch is an error."""
    lh, lw = lr.shape[:2]
    hh, hw = hr.shape[:2]
    if not (lh * scale <= hh < (lh + 1) * scale and lw * scale <= hw < (lw + 1) * scale):
        raise ValueError(
            f"LR/HR sizes disagree with scale {scale}: {lr_path} is {lw}x{lh} (WxH), so {hr_path} should be "
            f"{lw * scale}x{lh * scale} (up to {scale - 1} extra pixels), but it is {hw}x{hh}"
        )
    return lr, hr[: lh * scale, : lw * scale]


def load_pairs(paths: Sequence[PathPair], scale: int, min_lr_size: int = 0) -> list[ImagePair]:
    """Decode every pair into memory, aligned; ``min_lr_size`` rejects LR images smaller than a patch."""
    pairs = []
    for lr_path, hr_path in paths:
        lr, hr = align_pair(read_image(lr_path), read_image(hr_path), scale, lr_path, hr_path)
        if min(lr.shape[:2]) < min_lr_size:
            raise ValueError(
                f"{lr_path} is {lr.shape[1]}x{lr.shape[0]} (WxH): smaller than the LR patch of {min_lr_size} "
                f"pixels (data.patch_size / data.scale); lower data.patch_size or drop the image"
            )
        pairs.append((lr, hr))
    return pairs
