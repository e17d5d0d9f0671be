"""MATLAB's image operations as the published protocols use them, batched in torch on any device.

``imresize(x, 1/s, 'bicubic')`` is the project's own port (:mod:`pspl_lightning.imresize`): kornia's and
torch's bicubic use another kernel width, no antialiasing and other borders, so they give other pixels and
other PSNR. Here the same taps and weights run on B x C x H x W uint8 tensors, summed tap by tap in float64
in the port's order, so the result is bit-identical to the numpy port. ``imfilter(x, fspecial('gaussian',
k, sigma), 'replicate')`` uses kornia's separable Gaussian filter (the kernel is separable, so the 1-d
kernels' outer product is exactly ``fspecial``'s normalised kernel), also in float64.
"""

from __future__ import annotations

import math
from functools import lru_cache

import kornia
import torch
from torch import Tensor

from pspl_lightning.imresize import contributions


def to_uint8_matlab(x: Tensor) -> Tensor:
    """MATLAB's ``uint8(x)``: saturate to [0, 255], round half away from zero."""
    return torch.floor(x.clamp(0, 255) + 0.5).to(torch.uint8)


@lru_cache(maxsize=128)
def _taps(in_len: int, out_len: int, scale: float) -> tuple[Tensor, Tensor]:
    weights, indices = contributions(in_len, out_len, scale, antialias=True)
    return torch.from_numpy(weights), torch.from_numpy(indices)


def _resize_axis(x: Tensor, dim: int, out_len: int, scale: float) -> Tensor:
    """One axis of MATLAB's bicubic, float64, taps summed in the numpy port's order (same bits)."""
    dim %= x.ndim
    weights, indices = _taps(x.shape[dim], out_len, scale)
    weights, indices = weights.to(x.device), indices.to(x.device)
    shape = [1] * x.ndim
    shape[dim] = out_len
    out = torch.zeros(x.shape[:dim] + (out_len,) + x.shape[dim + 1 :], dtype=torch.float64, device=x.device)
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(shape) * torch.index_select(x, dim, indices[:, k])
    return out


def matlab_bicubic(img: Tensor, scale: int) -> Tensor:
    """``imresize(img, 1/scale, 'bicubic')`` of a B x C x H x W uint8 batch -> uint8, rounded after each
    axis as MATLAB's class-preserving resize does (rows first)."""
    factor = 1.0 / scale
    h, w = img.shape[-2:]
    out_h, out_w = int(math.ceil(h * factor)), int(math.ceil(w * factor))  # the port's own size rule
    rows = to_uint8_matlab(_resize_axis(img.to(torch.float64), -2, out_h, factor))
    # columns as rows of the transpose: gathering whole rows is several times faster than single elements
    cols = _resize_axis(rows.transpose(-1, -2).to(torch.float64).contiguous(), -2, out_w, factor)
    return to_uint8_matlab(cols).transpose(-1, -2).contiguous()


def matlab_nearest(img: Tensor, scale: int) -> Tensor:
    """``imresize(img, 1/scale, 'nearest')`` for H and W multiples of ``scale``: rows/columns
    ``scale // 2 + k * scale`` (0-based).

    MATLAB maps output pixel x (1-based) to u = x * s + (1 - s) / 2 and keeps the input pixel i with
    -0.5 <= u - i < 0.5 (antialiasing is off for 'nearest'): i = s/2 + 1 + (x - 1) s for even s and
    (s + 1)/2 + (x - 1) s for odd s, i.e. 0-based ``s // 2 + (x - 1) s``: 1, 4, 7, ... for s = 3.
    """
    return img[..., scale // 2 :: scale, scale // 2 :: scale]


def fspecial_gaussian_1d(size: int, sigma: float) -> Tensor:
    """The 1-d factor of MATLAB's ``fspecial('gaussian', size, sigma)`` (float64, sums to 1): its outer
    product with itself is the 2-d kernel."""
    return kornia.filters.get_gaussian_kernel1d(size, sigma, dtype=torch.float64)


def matlab_imfilter_gaussian(img: Tensor, size: int, sigma: float) -> Tensor:
    """``imfilter(img, fspecial('gaussian', size, sigma), 'replicate')`` of a uint8 batch -> uint8 (MATLAB
    rounds the filtered image back to the input's class)."""
    kernel = fspecial_gaussian_1d(size, sigma).to(img.device)
    blurred = kornia.filters.filter2d_separable(img.to(torch.float64), kernel, kernel, "replicate")
    return to_uint8_matlab(blurred)
