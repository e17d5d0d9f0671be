"""MATLAB-compatible bicubic ``imresize`` (antialiased, a = -0.5, symmetric borders) in float64.

The benchmark LR images are made with MATLAB's ``imresize(hr, 1/scale, 'bicubic')``; PIL's and
torch's bicubic produce other pixels and so other PSNR. Each axis is resized by a dense weight matrix
that folds in MATLAB's mirrored border indices, so the result is one matrix product per axis.
"""

from __future__ import annotations

import math

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """``out_len x in_len`` matrix M with ``M @ signal`` = MATLAB's bicubic resize along one axis."""
    kernel_width = 4.0
    if scale < 1 and antialias:  # widen the kernel to low-pass before subsampling
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centres in input coordinates (1-based)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    weights = scale * cubic(scale * dist) if (scale < 1 and antialias) else cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # MATLAB's symmetric padding
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), cols.ravel()), weights.ravel())
    return mat


def imresize(img: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """Resize an H x W or H x W x C image by ``scale`` like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Output size is ``ceil(H * scale) x ceil(W * scale)``. uint8 input gives uint8 output rounded half
    away from zero and clipped (as MATLAB); float input gives float64 output, unclipped.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an H x W or H x W x C array, got shape {img.shape}")
    if not scale > 0:
        raise ValueError(f"imresize scale must be > 0, got {scale}")
    h, w = img.shape[:2]
    out_h, out_w = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    data = img.astype(np.float64)
    rows = resize_matrix(h, out_h, scale, antialias)
    cols = resize_matrix(w, out_w, scale, antialias)
    # MATLAB resizes the axis with the smaller scale first; with one scale for both, rows go first.
    out = np.tensordot(rows, data, axes=(1, 0))
    out = np.moveaxis(np.tensordot(cols, out, axes=(1, 1)), 0, 1)
    if img.dtype == np.uint8:
        return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out
