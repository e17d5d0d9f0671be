"""Benchmark-protocol PSNR/SSIM: functional forms and torchmetrics classes (pure PyTorch)."""

from pspl_lightning.metrics.functional import (
    psnr,
    psnr_rgb,
    psnr_y,
    quantize,
    rgb_to_y,
    ssim,
    ssim_rgb,
    ssim_y,
    to_uint8,
)
from pspl_lightning.metrics.image_quality import PSNR, SSIM

__all__ = ["PSNR", "SSIM", "psnr", "psnr_rgb", "psnr_y", "quantize", "rgb_to_y", "ssim", "ssim_rgb", "ssim_y",
           "to_uint8"]
