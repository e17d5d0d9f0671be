"""Blur kernels of the realistic pipeline: isotropic and anisotropic Gaussians and motion blur, each drawn
at its own odd size and zero-padded to one size, so a batch is filtered at once with per-sample kernels."""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

KERNEL_TYPES = ("iso", "aniso", "motion")


def anisotropic_gaussian(size: int, sigma_x: float, sigma_y: float, theta: float) -> Tensor:
    """A size x size Gaussian with standard deviations ``sigma_x``, ``sigma_y`` along axes turned by
    ``theta`` radians, summing to 1. Hand-written: kornia's Gaussian kernels are axis-aligned only."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).to(torch.float32)


def blur_kernel(kind: str, size: int, sigma_x: float, sigma_y: float, theta: float, angle: float,
                direction: float) -> Tensor:
    """One size x size kernel of type ``kind`` (``iso`` uses ``sigma_x``; ``motion`` a line of ``size``
    pixels at ``angle`` degrees, weighted by ``direction`` in [-1, 1] as kornia defines it)."""
    if kind == "iso":
        sigma = torch.tensor([[sigma_x, sigma_x]], dtype=torch.float32)
        return kornia.filters.get_gaussian_kernel2d((size, size), sigma)[0]
    if kind == "aniso":
        return anisotropic_gaussian(size, sigma_x, sigma_y, theta)
    if kind == "motion":
        return kornia.filters.get_motion_kernel2d(size, torch.tensor([angle]), torch.tensor([direction]))[0]
    raise ValueError(f"unknown kernel type {kind!r}; expected one of {KERNEL_TYPES}")


def pad_kernel(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad an odd k x k kernel to size x size around its centre (same filtering result)."""
    p = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (p, p, p, p))


def identity_kernel(size: int) -> Tensor:
    """The size x size kernel that leaves an image unchanged."""
    k = torch.zeros(size, size)
    k[size // 2, size // 2] = 1.0
    return k
