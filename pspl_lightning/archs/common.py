"""Building blocks shared by the SR networks: mean shift, residual block, pixel-shuffle upsampler,
MATLAB-exact bicubic pre-upsampling and the Y-channel wrapper of the pre-upsampling networks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pspl_lightning.errors import ConfigError
from pspl_lightning.imresize import resize_matrix

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
COLOR_MODES = ("rgb", "y")


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


SCALES = (2, 3, 4)  # what the sub-pixel upsamplers are built for (and the DIV2K LR folders hold)


def check_scale(scale: int, network: str = "the network") -> None:
    """The one scale check of the project: raise :class:`ConfigError` unless ``scale`` is 2, 3 or 4."""
    if scale not in SCALES:
        raise ConfigError(f"{network} supports model.scale 2, 3 or 4, got {scale} (model.scale follows "
                          f"data.scale by default)")


def upsample_stages(scale: int) -> list[int]:
    """Pixel-shuffle factors of an upsampler: one stage for x2 and x3, two x2 stages for x4."""
    check_scale(scale)
    return [scale] if scale in (2, 3) else [2, 2]


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: one x``scale`` stage for 2 and 3, x2 stages for powers of two.

    Each stage is conv(``n_feats`` -> s^2 ``out_feats``) + PixelShuffle(s) [+ ``act()``]; ``out_feats``
    defaults to ``n_feats`` (RDN uses another width after the first stage).
    """

    def __init__(self, scale: int, n_feats: int, kernel_size: int = 3, out_feats: int | None = None,
                 act: Callable[[], nn.Module] | None = None) -> None:
        out_feats = n_feats if out_feats is None else out_feats
        layers: list[nn.Module] = []
        pad = kernel_size // 2
        in_feats = n_feats
        for s in upsample_stages(scale):
            layers += [nn.Conv2d(in_feats, s * s * out_feats, kernel_size, padding=pad), nn.PixelShuffle(s)]
            if act is not None:
                layers.append(act())
            in_feats = out_feats
        super().__init__(*layers)


class ResidualSR(nn.Module):
    """The EDSR-family skeleton: mean shift, conv head, ``blocks`` + conv under a global skip, sub-pixel tail.

    EDSR and RCAN differ only in their blocks; the attribute names match the published checkpoints.
    """

    scale_dependent: tuple[str, ...] = ("tail.",)  # weights a warm start from another scale must skip

    def __init__(self, scale: int, blocks: list[nn.Module], n_feats: int, n_colors: int = 3,
                 rgb_range: float = 1.0) -> None:
        super().__init__()
        check_scale(scale, type(self).__name__)
        self.scale = scale
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Conv2d(n_colors, n_feats, 3, padding=1)
        self.body = nn.Sequential(*blocks, nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, n_colors, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))


class BicubicUpsample(nn.Module):
    """MATLAB ``imresize(x, scale, 'bicubic')`` on B x C x H x W tensors (the input of VDSR and SRCNN).

    Uses the dense per-axis matrices of :func:`pspl_lightning.imresize.resize_matrix` (the data
    pipeline's MATLAB-exact resize) as two matrix products; torch's own bicubic uses a = -0.75 and gives
    other pixels. The cost (O(H) per output pixel) is far below that of the networks that follow.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"BicubicUpsample scale must be a positive integer, got {scale}")
        self.scale = int(scale)
        self._cache: dict[tuple[int, int, torch.device, torch.dtype], Tensor] = {}

    def _matrix(self, n: int, ref: Tensor) -> Tensor:
        key = (n, self.scale, ref.device, ref.dtype)
        if key not in self._cache:
            mat = resize_matrix(n, n * self.scale, float(self.scale))
            self._cache[key] = torch.from_numpy(mat).to(device=ref.device, dtype=ref.dtype)
        return self._cache[key]

    def forward(self, x: Tensor) -> Tensor:
        if self.scale == 1:
            return x
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        xf = x.to(dtype)
        rows, cols = self._matrix(x.shape[-2], xf), self._matrix(x.shape[-1], xf)
        return (rows @ xf @ cols.transpose(0, 1)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """Full-range BT.601 YCbCr of B x 3 x H x W RGB (Y in [0, 1], Cb/Cr centred on 0.5)."""
    r, g, b = rgb.unbind(dim=1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, (b - y) / 1.772 + 0.5, (r - y) / 1.402 + 0.5], dim=1)


def ycbcr_to_rgb(ycc: Tensor) -> Tensor:
    """Exact inverse of :func:`rgb_to_ycbcr`, unclipped. Hand-written: kornia's inverse clamps to [0, 1],
    which zeroes the gradient of every out-of-range pixel and changes the network's output."""
    y, cb, cr = ycc.unbind(dim=1)
    r = y + 1.402 * (cr - 0.5)
    b = y + 1.772 * (cb - 0.5)
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b], dim=1)


class PreUpsampledSR(nn.Module):
    """Base of the networks that work on the bicubic-upscaled image (VDSR, SRCNN): LR in, HR out, so the
    data stays the same for every network.

    ``channels="rgb"`` runs ``body`` on the three channels; ``channels="y"`` (the papers' setting) runs it on
    the luma of YCbCr only and takes the chroma from the bicubic image. Subclasses set ``self.body``
    and may override :meth:`restore`.
    """

    scale_dependent: tuple[str, ...] = ()  # no layer depends on the scale: every weight transfers

    def __init__(self, scale: int, channels: str = "rgb") -> None:
        super().__init__()
        if channels not in COLOR_MODES:
            raise ValueError(f"model.channels must be one of {list(COLOR_MODES)}, got {channels!r}")
        self.scale, self.channels = int(scale), channels
        self.n_colors = 3 if channels == "rgb" else 1
        self.upsample = BicubicUpsample(scale)

    def restore(self, x: Tensor) -> Tensor:
        """The network proper, on the upscaled RGB or Y image."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        up = self.upsample(x)
        if self.channels == "rgb":
            return self.restore(up)
        ycc = rgb_to_ycbcr(up)
        return ycbcr_to_rgb(torch.cat([self.restore(ycc[:, :1]), ycc[:, 1:]], dim=1))


def init_kaiming(module: nn.Module, scale: float = 1.0) -> None:
    """He-normal init of every conv (fan-in, ReLU gain) multiplied by ``scale``; zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            m.weight.data.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
