"""Building blocks shared by the SR networks: mean shift, residual block, pixel-shuffle upsampler."""

from __future__ import annotations

import torch
from torch import Tensor, nn

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """Adds ``sign * rgb_range * mean`` per channel (a frozen 1x1 conv, as in EDSR's checkpoints)."""

    def __init__(self, rgb_range: float = 1.0, mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
                 sign: int = -1) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean))
        for p in self.parameters():
            p.requires_grad_(False)


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip (EDSR, no batch norm)."""

    def __init__(self, n_feats: int, kernel_size: int = 3, res_scale: float = 1.0) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale if self.res_scale != 1 else x + self.body(x)


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: one x``scale`` stage for 2 and 3, x2 stages for powers of two."""

    def __init__(self, scale: int, n_feats: int, kernel_size: int = 3) -> None:
        layers: list[nn.Module] = []
        pad = kernel_size // 2
        if scale in (2, 3):
            stages = [scale]
        elif scale > 0 and scale & (scale - 1) == 0:
            stages = [2] * (scale.bit_length() - 1)
        else:
            raise ValueError(f"model.scale must be 2, 3 or a power of two, got {scale}")
        for s in stages:
            layers += [nn.Conv2d(n_feats, s * s * n_feats, kernel_size, padding=pad), nn.PixelShuffle(s)]
        super().__init__(*layers)
