"""Benchmark-protocol PSNR/SSIM (the BasicSR / MATLAB convention), computed per image in float64.

Protocol: SR clamped to [0, 1] and rounded to 8 bit, ``crop_border`` pixels removed on each side,
Y channel of BT.601 (``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for RGB in [0, 1], values in 0..255),
SSIM with an 11 x 11 Gaussian window (sigma 1.5) over the valid region, constants for data range 255.
Images are B x 3 x H x W, float in [0, 1] or uint8 in 0..255; every score is a tensor of B values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pspl_lightning.filters import gaussian_kernel1d, separable_filter

_Y_WEIGHTS = (65.481, 128.553, 24.966)
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def to_unit_double(img: Tensor) -> Tensor:
    """float64 in [0, 1]: uint8 is divided by 255 exactly, floats are only widened."""
    return img.double() / 255.0 if img.dtype == torch.uint8 else img.double()


def quantize(img: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid (in float64), as saving the SR image to PNG would."""
    return to_unit_double(img).clamp(0, 1).mul(255).round().div(255)


def to_uint8(img: Tensor) -> Tensor:
    """The 8-bit image a PNG of ``img`` holds (same layout, uint8), rounded exactly as :func:`quantize`."""
    return quantize(img).mul_(255).round_().to(torch.uint8)


def rgb_to_y(img: Tensor) -> Tensor:
    """BT.601 luma in 0..255 (B x 1 x H x W, float64) from RGB in [0, 1] (B x 3 x H x W)."""
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"expected a B x 3 x H x W RGB tensor, got shape {tuple(img.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=img.device).view(1, 3, 1, 1)
    return (to_unit_double(img) * w).sum(dim=1, keepdim=True) + 16.0


def _prepare(sr: Tensor, hr: Tensor, crop_border: int, y_channel: bool) -> tuple[Tensor, Tensor]:
    if sr.dim() != 4 or sr.shape[1] != 3:
        raise ValueError(f"expected B x 3 x H x W RGB images, got SR of shape {tuple(sr.shape)}")
    if sr.shape != hr.shape:
        raise ValueError(f"SR and HR shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if crop_border < 0 or 2 * crop_border >= min(sr.shape[-2:]):
        raise ValueError(f"crop_border={crop_border} must be >= 0 and leave pixels of a "
                         f"{tuple(sr.shape[-2:])} image")
    sr, hr = quantize(sr), to_unit_double(hr)
    if y_channel:
        sr, hr = rgb_to_y(sr), rgb_to_y(hr)
    else:
        sr, hr = sr * 255.0, hr * 255.0
    if crop_border > 0:
        sr = sr[..., crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[..., crop_border:-crop_border, crop_border:-crop_border]
    return sr, hr


def psnr(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Per-image PSNR in dB (tensor of B, float64) on 0..255 data; ``inf`` for identical images."""
    sr, hr = _prepare(sr, hr, crop_border, y_channel)
    mse = (sr - hr).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(255.0**2 / mse)


def ssim(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Per-image SSIM (tensor of B, float64), the mean over channels of the valid-region SSIM map."""
    sr, hr = _prepare(sr, hr, crop_border, y_channel)
    if min(sr.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least 11 x 11 pixels after the border crop, "
                         f"got {tuple(sr.shape[-2:])}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = gaussian_kernel1d(SSIM_WINDOW, SSIM_SIGMA, dtype=torch.float64, device=sr.device)
    n = sr.shape[1]
    moments = separable_filter(torch.cat([sr, hr, sr * sr, hr * hr, sr * hr], dim=1), kernel, padding="valid")
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(n, dim=1)
    var_x, var_y, cov = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y, e_xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    smap = num / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return smap.flatten(1).mean(dim=1)


def psnr_y(sr: Tensor, hr: Tensor, crop_border: int = 0) -> Tensor:
    """Per-image PSNR on the Y channel, the number published SR tables report."""
    return psnr(sr, hr, crop_border, y_channel=True)


def ssim_y(sr: Tensor, hr: Tensor, crop_border: int = 0) -> Tensor:
    """Per-image SSIM on the Y channel, the number published SR tables report."""
    return ssim(sr, hr, crop_border, y_channel=True)


def psnr_rgb(sr: Tensor, hr: Tensor, crop_border: int = 0) -> Tensor:
    """Per-image PSNR over the three RGB channels (one MSE over all of them)."""
    return psnr(sr, hr, crop_border, y_channel=False)


def ssim_rgb(sr: Tensor, hr: Tensor, crop_border: int = 0) -> Tensor:
    """Per-image SSIM over RGB: the mean of the three per-channel SSIMs (BasicSR's colour SSIM)."""
    return ssim(sr, hr, crop_border, y_channel=False)
