"""VDSR (Kim et al., CVPR 2016): 20 conv layers learning the residual of the bicubic-upscaled image."""

from __future__ import annotations

from torch import Tensor, nn

from pspl_lightning.archs.common import PreUpsampledSR, init_kaiming


class VDSR(PreUpsampledSR):
    """``n_layers`` 3x3 convs (ReLU between) of ``n_feats`` channels plus a global skip, on the
    MATLAB-bicubic upscaled input (done inside, so it trains on the same LR/HR data as the others).
    About 0.67M parameters (668,227 on RGB, 665,921 with ``channels="y"``, the paper's setting)."""

    def __init__(self, scale: int = 2, n_layers: int = 20, n_feats: int = 64, channels: str = "rgb") -> None:
        super().__init__(scale, channels)
        if n_layers < 2:
            raise ValueError(f"VDSR model.n_layers must be >= 2, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(self.n_colors, n_feats, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(n_layers - 2):
            layers += [nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(n_feats, self.n_colors, 3, padding=1))
        self.body = nn.Sequential(*layers)
        init_kaiming(self.body)

    def restore(self, x: Tensor) -> Tensor:
        return x + self.body(x)
