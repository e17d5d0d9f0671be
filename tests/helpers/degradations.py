"""Real degradations of real photos, shared by the loss and metric tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from skimage.filters import gaussian

from pspl_lightning.imresize import imresize


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (H x W x 3 uint8) after a JPEG round trip at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def degrade(hr: np.ndarray, kind: str) -> np.ndarray:
    """A float64 H x W x 3 "SR output" of uint8 ``hr``: near [0, 1], off the 8-bit grid like a network's."""
    x = hr.astype(np.float64) / 255.0
    if kind in ("bicubic_x2", "bicubic_x4"):  # MATLAB-bicubic down then up: the classic SR baseline
        s = int(kind[-1])
        return imresize(imresize(x, 1 / s), float(s))
    if kind == "jpeg20":
        return jpeg(hr, 20).astype(np.float64) / 255.0
    if kind == "jpeg25":
        return jpeg(hr, 25).astype(np.float64) / 255.0
    if kind == "noise":
        return x + np.random.default_rng(0).normal(0, 4 / 255, x.shape)
    if kind == "noise_clip":  # values outside [0, 1] exercise the clamp
        return x + np.random.default_rng(0).normal(0, 12 / 255, x.shape)
    if kind == "blur":
        return gaussian(x, sigma=1.2, channel_axis=2)
    if kind == "blur_offset":  # blurred and brightened: flat regions with a constant offset
        return gaussian(x, sigma=1.0, channel_axis=2) + 3 / 255
    raise ValueError(f"unknown degradation {kind!r}")
