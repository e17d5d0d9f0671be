"""Synthetic DIV2K-like data for benchmarks and tests: images with a natural (1/f) spectrum written in the
DIV2K folder layout, so the real loaders run on a machine without the dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pspl_lightning.data.io import write_png
from pspl_lightning.imresize import make_lr


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """H x W x 3 uint8 with a 1/f amplitude spectrum (the statistics of photographs) plus hard edges."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width))
    channels = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
        field = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(height, width))
        channels.append((field - field.mean()) / field.std())
    luma, chroma = channels[0], np.stack(channels[1:], axis=-1)
    img = 128 + 45 * luma[..., None] + 15 * np.concatenate([chroma, -chroma.sum(-1, keepdims=True)], -1)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(12):  # a few discs with sharp borders, as objects in front of a background
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.03, 0.15) * min(height, width)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += rng.uniform(-60, 60, 3)
    return np.clip(img + rng.normal(0, 0.7, img.shape), 0, 255).round().astype(np.uint8)


def make_div2k_folder(root: str | Path, train: range, valid: range, size: tuple[int, int] = (1356, 2040),
                      scales: tuple[int, ...] = (2,), with_lr: bool = True, seed: int = 0) -> Path:
    """Write ``DIV2K_{train,valid}_HR/NNNN.png`` (H x W = ``size``) and, with ``with_lr``, the MATLAB-bicubic
    ``DIV2K_{train,valid}_LR_bicubic/X<s>/NNNNx<s>.png`` under ``root``."""
    root = Path(root)
    for split, indices in (("train", train), ("valid", valid)):
        for i in indices:
            hr = natural_image(*size, seed=seed + i)
            write_png(root / f"DIV2K_{split}_HR" / f"{i:04d}.png", hr)
            for s in scales if with_lr else ():
                write_png(root / f"DIV2K_{split}_LR_bicubic" / f"X{s}" / f"{i:04d}x{s}.png", make_lr(hr, s))
    return root
