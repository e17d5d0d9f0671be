"""EDSR (Lim et al., 2017): residual blocks without batch norm, global skip, pixel-shuffle upsampler."""

from __future__ import annotations

from pspl_lightning.archs.common import ResBlock, ResidualSR


class EDSR(ResidualSR):
    """EDSR on RGB in [0, 1]. Defaults are EDSR-baseline (16 blocks, 64 features, res_scale 1);
    the paper model is ``EDSR(n_resblocks=32, n_feats=256, res_scale=0.1)``."""

    def __init__(self, scale: int = 2, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 n_colors: int = 3, rgb_range: float = 1.0) -> None:
        blocks = [ResBlock(n_feats, res_scale=res_scale) for _ in range(n_resblocks)]
        super().__init__(scale, blocks, n_feats, n_colors, rgb_range)
