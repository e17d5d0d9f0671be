"""One object that turns LR images into SR images: a loaded network + tiling + optional self-ensemble."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pspl_lightning.errors import ConfigError
from pspl_lightning.inference.ensemble import self_ensemble as ensemble_x8
from pspl_lightning.inference.loading import LoadedNetwork
from pspl_lightning.inference.tiling import receptive_radius, tiled_forward, window_overlap
from pspl_lightning.metrics.functional import to_uint8

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None: the GPU when there is one, else the CPU; anything else as torch spells it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _size_multiple(net: nn.Module, device: torch.device) -> int:
    """1, or the window size of a network that fails on an input of one pixel more than its window (a class
    that does not pad itself); found with one small blank forward pass."""
    window = getattr(net, "window_size", None)
    if not isinstance(window, int) or window < 2:
        return 1
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, window + 1, window + 1, device=device))
    except RuntimeError:
        return window
    return 1


class Upscaler:
    """``upscaler(lr)``: SR of a B x 3 x h x w float batch in [0, 1] (not clamped, float32).

    ``tile``: LR tile side (None: whole image at once); ``tile_overlap``: LR context around each tile
    (None: the network's receptive radius, which makes tiled output equal untiled output).
    """

    def __init__(self, loaded: LoadedNetwork, tile: int | None = None, tile_overlap: int | None = None,
                 self_ensemble: bool = False) -> None:
        self.loaded, self.net, self.scale = loaded, loaded.net, loaded.scale
        self.device = next(self.net.parameters()).device
        self.tile, self.self_ensemble = tile, self_ensemble
        self.overlap_note: str | None = None
        if tile is not None and tile_overlap is None:
            tile_overlap = receptive_radius(self.net)
            if tile_overlap is not None:
                self.overlap_note = f"tile_overlap = {tile_overlap} LR pixels (receptive radius: tiles exact)"
            elif (picked := window_overlap(self.net)) is not None:
                tile_overlap = picked[0]
                self.overlap_note = (f"tile_overlap = {tile_overlap} LR pixels, picked from the architecture "
                                     f"({picked[1]}; window attention: tiles approximate the untiled "
                                     f"output; tile=null runs whole images)")
            if self.overlap_note is not None:
                log.info("%s: %s", loaded.describe(), self.overlap_note)
        self.tile_overlap = tile_overlap
        self.multiple = _size_multiple(self.net, self.device)

    def _net(self, lr: Tensor) -> Tensor:
        """The network on ``lr``, padded (reflect, or replicate where too small) to ``self.multiple`` and
        cropped back, for classes that do not pad to their window themselves (spandrel's DRCT)."""
        m = self.multiple
        h, w = lr.shape[-2:]
        ph, pw = -h % m, -w % m
        if not (ph or pw):
            return self.net(lr)
        mode = "reflect" if ph < h and pw < w else "replicate"
        out = self.net(F.pad(lr, (0, pw, 0, ph), mode=mode))
        return out[..., : h * self.scale, : w * self.scale]

    def _forward(self, lr: Tensor) -> Tensor:
        if self.tile is None or max(lr.shape[-2:]) <= self.tile:
            return self._net(lr)
        if self.tile_overlap is None:
            raise ConfigError(
                f"{self.loaded.describe()} has layers that see the whole image, so tiles cannot reproduce "
                f"the untiled output of this {lr.shape[-1]}x{lr.shape[-2]} image; set tile_overlap "
                f"explicitly to accept approximate tiling, or tile=null"
            )
        return tiled_forward(self._net, lr, self.scale, self.tile, int(self.tile_overlap))

    @torch.no_grad()
    def __call__(self, lr: Tensor) -> Tensor:
        lr = lr.to(self.device, torch.float32)
        return ensemble_x8(self._forward, lr) if self.self_ensemble else self._forward(lr)

    def upscale_image(self, lr: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 -> (scale H) x (scale W) x 3 uint8, rounded to the nearest level."""
        x = torch.from_numpy(np.array(lr, copy=True, order="C")).permute(2, 0, 1)[None].float().div_(255.0)
        sr = to_uint8(self(x)[0])
        return sr.permute(1, 2, 0).cpu().numpy()
