"""RDN (Zhang et al., CVPR 2018): densely connected residual dense blocks with global feature fusion."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pspl_lightning.archs.common import Upsampler, check_scale


class DenseLayer(nn.Module):
    """conv-ReLU whose ``growth`` output channels are appended to its input."""

    def __init__(self, in_feats: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_feats, growth, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class RDB(nn.Module):
    """Residual dense block: ``n_layers`` dense layers, 1x1 local feature fusion, local residual."""

    def __init__(self, n_feats: int, growth: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[DenseLayer(n_feats + i * growth, growth) for i in range(n_layers)])
        self.fuse = nn.Conv2d(n_feats + n_layers * growth, n_feats, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fuse(self.layers(x))


class RDN(nn.Module):
    """RDN on RGB in [0, 1]. Defaults are the paper's configuration B (D = 16 blocks, C = 8 layers,
    G = 64 growth, G0 = 64 features; about 22.1M parameters at x2); configuration A is
    ``n_blocks=20, n_layers=6, growth=32``. Like the reference code, no mean shift."""

    scale_dependent: tuple[str, ...] = ("tail.",)

    def __init__(self, scale: int = 2, n_feats: int = 64, n_blocks: int = 16, n_layers: int = 8,
                 growth: int = 64, n_colors: int = 3) -> None:
        super().__init__()
        check_scale(scale, "RDN")
        self.scale = scale
        self.sfe1 = nn.Conv2d(n_colors, n_feats, 3, padding=1)
        self.sfe2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.blocks = nn.ModuleList([RDB(n_feats, growth, n_layers) for _ in range(n_blocks)])
        self.gff = nn.Sequential(nn.Conv2d(n_blocks * n_feats, n_feats, 1),
                                 nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.tail = nn.Sequential(Upsampler(scale, n_feats, out_feats=growth),
                                  nn.Conv2d(growth, n_colors, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        shallow = self.sfe1(x)
        x = self.sfe2(shallow)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return self.tail(self.gff(torch.cat(outs, dim=1)) + shallow)
