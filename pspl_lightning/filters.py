"""Gaussian windows and separable filtering shared by the SSIM map (loss) and the SSIM metric."""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_kernel1d(
    size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> Tensor:
    """Sampled 1-D Gaussian of ``size`` taps normalised to sum 1 (its outer product is the SSIM window)."""
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
    run several times faster on CPU than depthwise convolution (figures in docs/BENCHMARKS.md).
    """
    k = kernel.to(dtype=x.dtype, device=x.device)
    t_h = filter_matrix(x.shape[-2], k, padding)
    t_w = filter_matrix(x.shape[-1], k, padding)
    return t_h @ (x @ t_w.T)


class PaddedSeparableFilter:
    """Zero-padded, same-size separable filtering of an image stack with reused buffers.

    The images are written into the interior of a zero-padded buffer (:meth:`input`); :meth:`run` filters
    the rows with one large matrix product ``A @ T_w^T`` and the columns with one broadcast product
    ``T_h @ (.)``. The buffers and band matrices of the last (shape, dtype, device) are kept, so a
    training step allocates nothing here (every pass over memory counts in float64). Hand-written:
    depthwise ``conv2d`` has no fast float64 CPU kernel (much slower than these products; docs/BENCHMARKS.md).
    """

    def __init__(self, kernel: Tensor) -> None:
        if kernel.dim() != 1 or kernel.numel() % 2 != 1:
            raise ValueError(f"kernel must be 1-D with an odd number of taps, got {tuple(kernel.shape)}")
        self.kernel = kernel.detach().to(torch.float64)
        self.radius = kernel.numel() // 2
        self._key: tuple | None = None
        self._bufs: tuple[Tensor, ...] = ()

    def input(self, n: int, h: int, w: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The ``n x h x w`` interior of the zero-padded input buffer: write the images to filter here."""
        key = (n, h, w, dtype, torch.device(device))
        r = self.radius
        if key != self._key:
            self._key, self._bufs = None, ()  # free the old buffers before allocating new ones
            hp, wp = h + 2 * r, w + 2 * r
            padded = torch.zeros(n, hp, wp, dtype=dtype, device=device)
            rows = torch.empty(n, hp, w, dtype=dtype, device=device)
            out = torch.empty(n, h, w, dtype=dtype, device=device)
            k = self.kernel.to(device)
            t_w_t = filter_matrix(wp, k)[r : r + w].T.contiguous().to(dtype)  # wp x w
            t_h = filter_matrix(hp, k)[r : r + h].contiguous().to(dtype)  # h x hp
            self._key, self._bufs = key, (padded, rows, out, t_w_t, t_h)
        return self._bufs[0][:, r : r + h, r : r + w]

    def run(self) -> Tensor:
        """Filter the images last written to :meth:`input`; returns ``n x h x w``.

        The result is a buffer that the next call overwrites: copy what you keep.
        """
        if self._key is None:
            raise RuntimeError("PaddedSeparableFilter.run called before input()")
        padded, rows, out, t_w_t, t_h = self._bufs
        torch.mm(padded.view(-1, padded.shape[-1]), t_w_t, out=rows.view(-1, rows.shape[-1]))
        return torch.matmul(t_h, rows, out=out)
