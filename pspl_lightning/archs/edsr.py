"""EDSR (Lim et al., 2017): residual blocks without batch norm, global skip, pixel-shuffle upsampler."""

from __future__ import annotations

from torch import Tensor, nn

from pspl_lightning.archs.common import MeanShift, ResBlock, Upsampler


class EDSR(nn.Module):
    """EDSR on RGB in [0, 1]. Defaults are EDSR-baseline (16 blocks, 64 features, res_scale 1);
    the paper model is ``EDSR(n_resblocks=32, n_feats=256, res_scale=0.1)``."""

    scale_dependent: tuple[str, ...] = ("tail.",)  # weights a warm start from another scale must skip

    def __init__(self, scale: int = 2, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 n_colors: int = 3, rgb_range: float = 1.0) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"EDSR supports model.scale 2, 3 or 4, got {scale}")
        self.scale = scale
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Conv2d(n_colors, n_feats, 3, padding=1)
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale=res_scale) for _ in range(n_resblocks)],
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, n_colors, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))
