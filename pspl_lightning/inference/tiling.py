"""Tiled inference: LR tiles with ``overlap`` pixels of context, only their cores pasted into the output.

Every output pixel is computed from a tile that contains its whole receptive field (when ``overlap`` is at
least the receptive radius), with the same zero padding at the image border as the untiled pass, so the
result equals untiled inference up to floating-point noise. No blending: blended seams are never exact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pspl_lightning.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

Forward = Callable[[Tensor], Tensor]

# Layers whose output depends on the whole image: no finite overlap makes tiling exact.
_GLOBAL_LAYERS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear, nn.MultiheadAttention)
_WINDOWED_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d)
_SHUFFLES = (nn.PixelShuffle, nn.PixelUnshuffle)  # rearrange pixels, see no neighbours
_RESAMPLER_RADIUS = 2  # LR pixels a bicubic (or narrower) resampler reads on each side


def receptive_radius(net: nn.Module, probe_size: int = 16) -> int | None:
    """An upper bound, in LR pixels, of how far an output pixel sees from its position in the input.

    Found by running ``net`` once on a small input with hooks on every module: each convolution or pooling
    layer adds ``dilation * (kernel - 1) / 2`` pixels at its own resolution, converted to LR pixels and
    rounded up; every other module that changes the image size (a resampler such as MATLAB bicubic or
    ``F.interpolate`` inside a forward, or a container holding one) adds 2, the bicubic support. Summing
    over all layers bounds the radius of any composition of them (branches and containers only make it an
    overestimate, which keeps tiling exact). ``None`` when a layer sees the whole image (global pooling,
    attention, linear layers on spatial features).
    """
    total, global_layers = 0, []
    hooks = []

    def on_forward(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        x = inputs[0] if inputs else None
        if isinstance(module, _GLOBAL_LAYERS):
            global_layers.append(type(module).__name__)
        elif isinstance(module, _WINDOWED_LAYERS):
            ratio = x.shape[-1] / probe_size  # this layer's resolution relative to the LR input
            kernel, dilation = module.kernel_size, getattr(module, "dilation", 1)
            k = kernel[-1] if isinstance(kernel, tuple) else kernel
            d = dilation[-1] if isinstance(dilation, tuple) else dilation
            total += math.ceil(d * (k - 1) / 2 / ratio)
        elif (isinstance(x, Tensor) and isinstance(output, Tensor) and x.dim() == 4 and output.dim() == 4
              and x.shape[-2:] != output.shape[-2:] and not isinstance(module, _SHUFFLES)):
            total += _RESAMPLER_RADIUS

    for module in net.modules():
        hooks.append(module.register_forward_hook(on_forward))
    try:
        param = next(net.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad():
            net(torch.rand(1, 3, probe_size, probe_size, device=device, dtype=dtype))
    finally:
        for hook in hooks:
            hook.remove()
    return None if global_layers else total


def window_overlap(net: nn.Module) -> tuple[int, str] | None:
    """(overlap, why) for a window-attention network (spandrel's SwinIR, HAT, DAT, ...: a ``window_size``
    attribute or hyper-parameter): one window of context per residual group (``len(depths)``), rounded to
    whole windows, so tiles carry the context the shifted windows reach through each group; None for any
    other network. Tiles of such a network approximate untiled output (its windows see past any overlap)."""
    hyper = getattr(net, "hyperparameters", None) or {}
    window = hyper.get("window_size", getattr(net, "window_size", None))
    if isinstance(window, (tuple, list)):
        window = max(window)
    if not isinstance(window, int) or window < 1:
        return None
    depths = hyper.get("depths", hyper.get("depth", getattr(net, "depths", None)))
    groups = len(depths) if isinstance(depths, (tuple, list)) and depths else 1
    why = f"window {window} x {groups} residual group{'s' if groups != 1 else ''}"
    return window * groups, why


def tiled_forward(forward: Forward, lr: Tensor, scale: int, tile: int, overlap: int) -> Tensor:
    """``forward(lr)`` computed tile by tile: ``tile`` x ``tile`` LR cores, each run with ``overlap`` more
    pixels on every side (clipped at the image border), their x``scale`` outputs pasted without blending."""
    if tile < 1 or overlap < 0:
        raise ConfigError(f"tile must be >= 1 and tile_overlap >= 0, got tile={tile}, tile_overlap={overlap}")
    b, _, h, w = lr.shape
    if h <= tile and w <= tile:
        return forward(lr)
    out: Tensor | None = None
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(top - overlap, 0), max(left - overlap, 0)
            t1, l1 = min(bottom + overlap, h), min(right + overlap, w)
            sr = forward(lr[..., t0:t1, l0:l1])
            if sr.shape[-2:] != ((t1 - t0) * scale, (l1 - l0) * scale):
                raise CheckpointError(
                    f"the network turned a {t1 - t0}x{l1 - l0} tile into {tuple(sr.shape[-2:])}, "
                    f"not x{scale}: "
                    f"is the checkpoint's scale {scale}?"
                )
            if out is None:
                out = sr.new_zeros(b, sr.shape[1], h * scale, w * scale)
            rows = slice((top - t0) * scale, (bottom - t0) * scale)
            cols = slice((left - l0) * scale, (right - l0) * scale)
            out[..., top * scale : bottom * scale, left * scale : right * scale] = sr[..., rows, cols]
    assert out is not None
    return out
