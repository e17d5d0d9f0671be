"""Real-ESRGAN's U-Net discriminator with spectral normalisation (Wang et al. 2021), layer for layer.

The layout and the parameter names are those of BasicSR's ``UNetDiscriminatorSN`` (``conv0`` ... ``conv9``;
``torch.nn.utils.spectral_norm`` keeps ``weight_orig``, ``weight_u`` and ``weight_v``), so a published
discriminator file such as ``RealESRGAN_x4plus_netD.pth`` loads with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from pspl_lightning.errors import ConfigError


def _leaky(x: Tensor) -> Tensor:
    return F.leaky_relu(x, negative_slope=0.2, inplace=True)


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class UNetDiscriminatorSN(nn.Module):
    """A per-pixel realness map (B x 1 x H x W, logits) of an RGB image whose sides are multiples of 8.

    Three stride-2 spectral-norm convolutions down, three bilinear x2 + convolution stages up with skip
    connections (``skip_connection``), two more spectral-norm convolutions and a plain 1-channel head.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        if not isinstance(num_feat, int) or isinstance(num_feat, bool) or num_feat < 1:
            raise ConfigError(f"discriminator.num_feat={num_feat!r} is not allowed: expected a positive "
                              f"integer")
        self.skip_connection = skip_connection
        f = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, f, kernel_size=3, stride=1, padding=1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"UNetDiscriminatorSN needs image sides divisible by 8, got "
                             f"{tuple(x.shape[-2:])}")
        x0 = _leaky(self.conv0(x))
        x1 = _leaky(self.conv1(x0))
        x2 = _leaky(self.conv2(x1))
        x3 = _leaky(self.conv3(x2))
        x4 = _leaky(self.conv4(_up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = _leaky(self.conv5(_up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = _leaky(self.conv6(_up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = _leaky(self.conv7(x6))
        out = _leaky(self.conv8(out))
        return self.conv9(out)
