"""TinySR: a few-thousand-parameter network for tests and smoke runs (seconds on a CPU)."""

from __future__ import annotations

from torch import Tensor, nn

from pspl_lightning.archs.common import BicubicUpsample, Upsampler, check_scale


class TinySR(nn.Module):
    """conv-ReLU ``n_layers`` times, a pixel-shuffle tail, plus the MATLAB-bicubic upscaled input, so its
    output starts near bicubic and its validation PSNR is meaningful from the first step."""

    scale_dependent: tuple[str, ...] = ("tail.",)

    def __init__(self, scale: int = 2, n_feats: int = 16, n_layers: int = 2, n_colors: int = 3) -> None:
        super().__init__()
        check_scale(scale, "TinySR")
        self.scale = scale
        layers: list[nn.Module] = []
        for i in range(n_layers):
            in_feats = n_colors if i == 0 else n_feats
            layers += [nn.Conv2d(in_feats, n_feats, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, n_colors, 3, padding=1))
        self.upsample = BicubicUpsample(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.upsample(x) + self.tail(self.body(x))
