"""MSRResNet: SRResNet (Ledig et al., CVPR 2017) without batch norm, as in BasicSR / ESRGAN."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pspl_lightning.archs.common import ResBlock, Upsampler, check_scale, init_kaiming


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class MSRResNet(nn.Module):
    """16 residual blocks of 64 features (no BN), LeakyReLU 0.1 upsampler, HR conv, and a bilinear skip
    of the input; about 1.52M parameters at x4 (1.37M at x2). Convs start from He init x 0.1 (BasicSR)."""

    scale_dependent: tuple[str, ...] = ("tail.",)

    def __init__(self, scale: int = 4, n_resblocks: int = 16, n_feats: int = 64, n_colors: int = 3) -> None:
        super().__init__()
        check_scale(scale, "MSRResNet")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 3, padding=1), _lrelu())
        self.body = nn.Sequential(*[ResBlock(n_feats) for _ in range(n_resblocks)])
        self.tail = nn.Sequential(
            Upsampler(scale, n_feats, act=_lrelu),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            _lrelu(),
            nn.Conv2d(n_feats, n_colors, 3, padding=1),
        )
        init_kaiming(self, scale=0.1)

    def forward(self, x: Tensor) -> Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.tail(self.body(self.head(x))) + base
