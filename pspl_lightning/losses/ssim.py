"""Per-pixel SSIM map as used by PSPL: 11 x 11 Gaussian (sigma 1.5), per channel, zero padding."""

from __future__ import annotations

import torch
from torch import Tensor

from pspl_lightning.filters import gaussian_kernel1d, separable_filter

C1 = 0.01**2
C2 = 0.03**2


def ssim_map(
    x: Tensor,
    y: Tensor,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    c1: float = C1,
    c2: float = C2,
) -> Tensor:
    """SSIM of ``x`` and ``y`` (B x C x H x W) at every pixel and channel, same size as the input.

    Local statistics use a normalised Gaussian window applied per channel with zero padding, exactly as
    the PSPL reference (border pixels see the zeros). ``c1``/``c2`` are absolute: scale them to the data
    range for the textbook SSIM. Computed in the dtype of the inputs: the variances are E[x^2] - mu^2,
    so pass float64 when the constants are small against mu^2 (see ``PSPLLoss``).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"ssim_map expects two B x C x H x W tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    kernel = gaussian_kernel1d(window_size, sigma, dtype=x.dtype, device=x.device)
    channels = x.shape[1]
    # var_x and var_y only appear summed: filter x^2 + y^2 as one image (four filterings instead of five).
    moments = separable_filter(torch.cat([x, y, x * x + y * y, x * y], dim=1), kernel)
    mu_x, mu_y, e_sq, e_xy = moments.split(channels, dim=1)
    mu_xy = mu_x * mu_y
    mu_sq = mu_x * mu_x + mu_y * mu_y
    return ((2 * mu_xy + c1) * (2 * (e_xy - mu_xy) + c2)) / ((mu_sq + c1) * (e_sq - mu_sq + c2))
