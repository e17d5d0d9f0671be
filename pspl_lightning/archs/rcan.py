"""RCAN (Zhang et al., ECCV 2018): residual-in-residual groups of channel-attention blocks."""

from __future__ import annotations

from torch import Tensor, nn

from pspl_lightning.archs.common import ResidualSR


class ChannelAttention(nn.Module):
    """Squeeze (global average) and excitation (1x1 conv bottleneck, sigmoid) rescaling of the channels."""

    def __init__(self, n_feats: int, reduction: int = 16) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.excite = nn.Sequential(
            nn.Conv2d(n_feats, n_feats // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats // reduction, n_feats, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.excite(self.pool(x))


class RCAB(nn.Module):
    """Residual channel-attention block: conv-ReLU-conv-attention plus identity."""

    def __init__(self, n_feats: int, reduction: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            ChannelAttention(n_feats, reduction),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


class ResidualGroup(nn.Module):
    """``n_resblocks`` RCABs and a conv, with a short skip connection."""

    def __init__(self, n_feats: int, n_resblocks: int, reduction: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *[RCAB(n_feats, reduction, res_scale) for _ in range(n_resblocks)],
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class RCAN(ResidualSR):
    """RCAN on RGB in [0, 1]; defaults are the paper's (10 groups x 20 blocks, 64 features, reduction 16,
    about 15.4M parameters at x2)."""

    def __init__(self, scale: int = 2, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 reduction: int = 16, res_scale: float = 1.0, n_colors: int = 3,
                 rgb_range: float = 1.0) -> None:
        if n_feats % reduction:
            raise ValueError(f"RCAN model.n_feats={n_feats} must be divisible by model.reduction={reduction}")
        blocks = [ResidualGroup(n_feats, n_resblocks, reduction, res_scale) for _ in range(n_resgroups)]
        super().__init__(scale, blocks, n_feats, n_colors, rgb_range)
