"""Per-pixel SSIM map as used by PSPL: 11 x 11 Gaussian (sigma 1.5), per channel, zero padding."""

from __future__ import annotations

import torch
from torch import Tensor

from pspl_lightning.filters import PaddedSeparableFilter, gaussian_kernel1d

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
    dtype: torch.dtype | None = None,
    filt: PaddedSeparableFilter | None = None,
) -> Tensor:
    """SSIM of ``x`` and ``y`` (B x C x H x W) at every pixel and channel, same size, as float32.

    Local statistics use a normalised Gaussian window applied per channel with zero padding, exactly as
    the PSPL reference (border pixels see the zeros). ``c1``/``c2`` are absolute: scale them to the data
    range for the textbook SSIM. The moments and the cancelling differences ``var = E[x^2] - mu^2``,
    ``cov = E[xy] - mu_x mu_y`` are computed in ``dtype`` (default: the dtype of ``x``); pass float64 when
    the constants are small against mu^2 (see ``PSPLLoss``). The rest of the formula is well conditioned
    (``|2 cov| <= var_x + var_y``) and runs in float32. ``filt`` reuses buffers across calls.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"ssim_map expects two B x C x H x W tensors of one shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    dtype = x.dtype if dtype is None else dtype
    if filt is None:
        filt = PaddedSeparableFilter(gaussian_kernel1d(window_size, sigma, dtype=torch.float64))
    elif filt.kernel.numel() != window_size:
        raise ValueError(f"filt has a {filt.kernel.numel()}-tap kernel, window_size is {window_size}")
    b, c, h, w = x.shape
    # Four filtered images: x, y, x^2 + y^2 (var_x and var_y only appear summed) and xy.
    ax, ay, a_sq, a_xy = filt.input(4 * b * c, h, w, dtype, x.device).view(4, b, c, h, w).unbind(0)
    ax.copy_(x)
    ay.copy_(y)
    torch.mul(ax, ax, out=a_sq).addcmul_(ay, ay)
    torch.mul(ax, ay, out=a_xy)
    mu_x, mu_y, e_sq, e_xy = filt.run().view(4, b, c, h, w).unbind(0)
    var_sum = e_sq.addcmul_(mu_x, mu_x, value=-1).addcmul_(mu_y, mu_y, value=-1)  # in place: reused buffer
    cov = e_xy.addcmul_(mu_x, mu_y, value=-1)
    f32 = {"dtype": torch.float32, "memory_format": torch.contiguous_format}
    mu_x, mu_y, var_sum, cov = mu_x.to(**f32), mu_y.to(**f32), var_sum.to(**f32), cov.to(**f32)
    num = torch.mul(mu_x, mu_y).mul_(2).add_(c1).mul_(cov.mul_(2).add_(c2))
    den = mu_x.square_().add_(mu_y.square_()).add_(c1).mul_(var_sum.add_(c2))
    return num.div_(den)
