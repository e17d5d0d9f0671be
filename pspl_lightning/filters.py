"""Gaussian windows and separable filtering shared by the SSIM map (loss) and the SSIM metric."""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_kernel1d(
    size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> Tensor:
    """Sampled 1-D Gaussian of ``size`` taps normalised to sum 1 (its outer product is the 2-D SSIM window)."""
    if size % 2 != 1 or size < 1:
        raise ValueError(f"Gaussian window size must be a positive odd integer, got {size}")
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def filter_matrix(n: int, kernel: Tensor, padding: str = "zeros") -> Tensor:
    """Banded matrix ``T`` with ``T @ v`` = 1-D correlation of a length-``n`` signal with ``kernel``.

    ``padding="zeros"``: ``n`` outputs, samples outside the signal count as zero (rows near the ends sum
    to less than 1). ``padding="valid"``: the ``n - len(kernel) + 1`` outputs that need no padding.
    """
    if padding not in ("zeros", "valid"):
        raise ValueError(f"padding must be 'zeros' or 'valid', got {padding!r}")
    radius = kernel.numel() // 2
    idx = torch.arange(n, device=kernel.device)
    offset = idx[None, :] - idx[:, None]
    taps = kernel[(offset + radius).clamp(0, kernel.numel() - 1)]
    mat = torch.where(offset.abs() <= radius, taps, torch.zeros((), dtype=kernel.dtype, device=kernel.device))
    return mat if padding == "zeros" else mat[radius : n - radius]


def separable_filter(x: Tensor, kernel: Tensor, padding: str = "zeros") -> Tensor:
    """Filter every channel of ``x`` (... x H x W) with ``outer(kernel, kernel)``.

    Hand-written rather than ``kornia.filters.filter2d_separable``: the PSPL reference pads with zeros and
    the benchmark SSIM keeps only the valid region, and two small matrix products (``T_h @ x @ T_w^T``)
    run about 4x faster on CPU than depthwise convolution (measured: 6.6 vs 27.6 ms for 16 x 15 x 96 x 96).
    """
    k = kernel.to(dtype=x.dtype, device=x.device)
    t_h = filter_matrix(x.shape[-2], k, padding)
    t_w = filter_matrix(x.shape[-1], k, padding)
    return t_h @ (x @ t_w.T)
