"""Blur kernels of the realistic pipeline, a batch at a time: isotropic and anisotropic Gaussians and motion
blur, each at its own odd size, zero-padded to one size so that a batch is filtered at once."""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

KERNEL_TYPES = ("iso", "aniso", "motion")


def _grid(size: int) -> tuple[Tensor, Tensor]:
    r = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    return y, x


def _cut(kernels: Tensor, ksize: Tensor) -> Tensor:
    """Zero each B x S x S kernel outside its centred ksize x ksize window and renormalise: the same as the
    ksize x ksize kernel zero-padded to S x S."""
    y, x = _grid(kernels.shape[-1])
    half = (ksize // 2).to(torch.float64)[:, None, None]
    kernels = kernels * ((y.abs() <= half) & (x.abs() <= half))
    return kernels / kernels.sum((1, 2), keepdim=True)


def isotropic_gaussians(size: int, ksize: Tensor, sigma: Tensor) -> Tensor:
    """B isotropic Gaussians (kornia's, std ``sigma``), each ``ksize`` wide, on a size x size grid."""
    sigmas = torch.stack([sigma, sigma], dim=1).to(torch.float64)
    return _cut(kornia.filters.get_gaussian_kernel2d((size, size), sigmas), ksize)


def anisotropic_gaussians(size: int, ksize: Tensor, sigma_x: Tensor, sigma_y: Tensor,
                          theta: Tensor) -> Tensor:
    """B Gaussians with stds ``sigma_x``, ``sigma_y`` along axes turned by ``theta`` radians, each ``ksize``
    wide. Hand-written: kornia's Gaussian kernels are axis-aligned only."""
    y, x = _grid(size)
    c, s = (t.to(torch.float64)[:, None, None] for t in (torch.cos(theta), torch.sin(theta)))
    u, v = c * x + s * y, -s * x + c * y
    sx, sy = (t.to(torch.float64)[:, None, None] for t in (sigma_x, sigma_y))
    return _cut(torch.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)), ksize)


def motion_kernel(size: int, ksize: int, angle: float, direction: float) -> Tensor:
    """kornia's motion-blur line of ``ksize`` pixels at ``angle`` degrees (weighted by ``direction`` in
    [-1, 1]), zero-padded to size x size."""
    k = kornia.filters.get_motion_kernel2d(ksize, torch.tensor([angle]), torch.tensor([direction]))[0]
    p = (size - ksize) // 2
    return F.pad(k.to(torch.float64), (p, p, p, p))


def blur_kernels(size: int, kind: Tensor, ksize: Tensor, sigma_x: Tensor, sigma_y: Tensor, theta: Tensor,
                 angle: Tensor, direction: Tensor, on: Tensor) -> Tensor:
    """B x size x size float32 kernels: type ``kind`` (indices into KERNEL_TYPES) where ``on``, else the
    identity (no blur)."""
    iso = isotropic_gaussians(size, ksize, sigma_x)
    aniso = anisotropic_gaussians(size, ksize, sigma_x, sigma_y, theta)
    kernels = torch.where((kind == KERNEL_TYPES.index("iso"))[:, None, None], iso, aniso)
    for b in torch.nonzero(kind == KERNEL_TYPES.index("motion")).flatten().tolist():
        kernels[b] = motion_kernel(size, int(ksize[b]), float(angle[b]), float(direction[b]))
    identity = torch.zeros(size, size, dtype=torch.float64)
    identity[size // 2, size // 2] = 1.0
    return torch.where(on[:, None, None], kernels, identity).to(torch.float32)
