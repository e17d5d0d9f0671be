"""Real-ESRGAN's unsharp masking of the ground truth (BasicSR's ``USMSharp``): its pixel and perceptual
terms compare the SR with a sharpened HR, the discriminator sees the HR as it is (pure PyTorch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def opencv_gaussian_kernel1d(size: int, sigma: float = 0.0) -> Tensor:
    """``cv2.getGaussianKernel(size, sigma)`` (float64, sums to 1): sigma <= 0 means
    ``0.3 * ((size - 1) * 0.5 - 1) + 0.8``, as OpenCV derives it from the size."""
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


class USMSharp(nn.Module):
    """``soft_mask * clip(img + weight * (img - blur), 0, 1) + (1 - soft_mask) * img`` with a 51 x 51
    Gaussian blur (radius 50, OpenCV's sigma 8) and the mask ``|img - blur| * 255 > threshold`` blurred
    the same way; reflect padding, as BasicSR's ``filter2D``. Images B x C x H x W in [0, 1], H, W > 25."""

    def __init__(self, radius: int = 50, sigma: float = 0.0, weight: float = 0.5,
                 threshold: float = 10.0) -> None:
        super().__init__()
        if radius % 2 == 0:
            radius += 1
        k = opencv_gaussian_kernel1d(radius, sigma)
        self.register_buffer("kernel", torch.outer(k, k).float()[None, None], persistent=False)
        self.weight, self.threshold = float(weight), float(threshold)

    def _blur(self, img: Tensor) -> Tensor:
        b, c, h, w = img.shape
        r = self.kernel.shape[-1] // 2
        padded = F.pad(img.reshape(b * c, 1, h, w), (r, r, r, r), mode="reflect")
        return F.conv2d(padded, self.kernel.to(img.dtype)).view(b, c, h, w)

    @torch.no_grad()
    def forward(self, img: Tensor) -> Tensor:
        blur = self._blur(img)
        residual = img - blur
        mask = (residual.abs() * 255 > self.threshold).to(img.dtype)
        soft_mask = self._blur(mask)
        sharp = (img + self.weight * residual).clamp(0, 1)
        return soft_mask * sharp + (1 - soft_mask) * img
