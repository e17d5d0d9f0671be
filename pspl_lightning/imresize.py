"""MATLAB-compatible bicubic ``imresize`` (antialiased, a = -0.5, symmetric borders).

The benchmark LR images are made with MATLAB's ``imresize(hr, 1/scale, 'bicubic')``; PIL's and
torch's bicubic produce other pixels and so other PSNR. Hand-written because no library reproduces
MATLAB: each axis is a weighted sum of a few mirrored taps (``contributions``), rows first, and for
uint8 input the result is rounded to uint8 after EACH axis, as MATLAB's class-preserving
``imresizemex`` does (BasicSR's float-only version differs from MATLAB by 1 at some pixels).
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


def contributions(in_len: int, out_len: int, scale: float,
                  antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: ``(weights, indices)``, each ``out_len x taps``, indices 0-based and
    already mirrored at the borders, so output ``i`` = ``sum_k weights[i, k] * signal[indices[i, k]]``."""
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:  # widen the kernel to low-pass before subsampling
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centres in input coordinates (1-based)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    weights = scale * cubic(scale * dist) if shrink else cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # MATLAB's symmetric padding
    return weights, mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """``out_len x in_len`` matrix M with ``M @ signal`` = MATLAB's bicubic resize along one axis (float)."""
    weights, indices = contributions(in_len, out_len, scale, antialias)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), weights.shape[1]), indices.ravel()), weights.ravel())
    return mat


def _resize_axis(data: np.ndarray, axis: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """Resize ``data`` along ``axis`` (0 or 1) in float64, one tap at a time (memory: one output array)."""
    weights, indices = contributions(data.shape[axis], out_len, scale, antialias)
    shape = [1] * data.ndim
    shape[axis] = out_len
    out = np.zeros(data.shape[:axis] + (out_len,) + data.shape[axis + 1 :], dtype=np.float64)
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(shape) * np.take(data, indices[:, k], axis=axis)
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's float -> uint8: saturate, round half away from zero."""
    return np.floor(np.clip(x, 0, 255) + 0.5).astype(np.uint8)


def imresize(img: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """Resize an H x W or H x W x C image by ``scale`` like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Output size is ``ceil(H * scale) x ceil(W * scale)``. uint8 input gives uint8 output, rounded and
    saturated after each axis exactly as MATLAB; float input gives float64 output, unclipped.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an H x W or H x W x C array, got shape {img.shape}")
    if not scale > 0:
        raise ValueError(f"imresize scale must be > 0, got {scale}")
    h, w = img.shape[:2]
    out_h, out_w = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    is_uint8 = img.dtype == np.uint8
    # MATLAB resizes the axis with the smaller scale first; with one scale for both, rows go first.
    out = _resize_axis(img, 0, out_h, scale, antialias)
    if is_uint8:
        out = _to_uint8(out)
    out = _resize_axis(out, 1, out_w, scale, antialias)
    return _to_uint8(out) if is_uint8 else out


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of ``scale`` (never resize)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic LR image of the modcropped HR image."""
    return imresize(modcrop(hr, scale), 1.0 / scale)
