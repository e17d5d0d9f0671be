"""What every degradation shares: the scale check, per-sample randomness from (seed, key), and the split
between drawing random numbers (CPU, cheap, device-independent) and applying them (batched, on the device).

A key is an integer that names one sample: the training sampler's per-sample seed (a function of the run
seed and the position in the run: ranks differ, workers and resumes do not matter) or, for validation and
evaluation, a hash of the image's name. Every random number of a sample comes from a CPU
``torch.Generator`` seeded by ``mix(seed, key)``, so a sample's LR image is a function of (degradation
seed, key, HR image) alone, on any device and in any batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pspl_lightning.errors import ConfigError

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of SplitMix64 (Steele et al. 2014): a bijective 64-bit mixer with good avalanche."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def mix(*values: int) -> int:
    """One 64-bit generator seed from integers (order matters; nearby inputs give unrelated seeds)."""
    h = 0
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK))
    return h


def name_key(name: str) -> int:
    """The key of a validation or evaluation image: a stable 63-bit hash of its name (file stem), so that
    adding or removing other images never changes its degradation."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") >> 1


def check_range(key: str, value: Any, low: float = float("-inf"), high: float = float("inf"),
                integer: bool = False) -> tuple[float, float]:
    """``value`` as (min, max) inside [low, high] with min <= max, else a ConfigError naming ``key``."""
    kind = int if integer else (int, float)
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{key}={value!r} is not allowed: expected [min, max] "
                          f"({'integers' if integer else 'numbers'})")
    lo, hi = value
    if lo > hi:
        raise ConfigError(f"{key}={list(value)} is not allowed: min {lo} > max {hi}")
    if lo < low or hi > high:
        raise ConfigError(f"{key}={list(value)} is not allowed: expected values in [{low}, {high}]")
    return lo, hi


def check_number(key: str, value: Any, low: float = float("-inf"), high: float = float("inf"),
                 integer: bool = False) -> float:
    """``value`` as a number in [low, high], else a ConfigError naming ``key``."""
    kind = int if integer else (int, float)
    if not isinstance(value, kind) or isinstance(value, bool) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{key}={value!r} is not allowed: expected {what} in [{low}, {high}]")
    return value


def check_odd_size(key: str, value: Any) -> int:
    """A kernel side: an odd integer >= 3 (a centred kernel)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 3 or value % 2 == 0:
        raise ConfigError(f"{key}={value!r} is not allowed: expected an odd kernel size >= 3")
    return value


def to_device(draws: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a (nested) draw to ``device``; other values stay as they are."""
    def move(v: Any) -> Any:
        if isinstance(v, Tensor):
            return v.to(device, non_blocking=True)
        return {k: move(x) for k, x in v.items()} if isinstance(v, dict) else v

    return move(draws)


class Degradation:
    """HR -> LR: ``lr = degradation(hr, keys)`` for a B x 3 x H x W uint8 batch on any device (H, W multiples
    of the scale) and B integer keys; returns B x 3 x H/s x W/s uint8.

    ``draw(keys, size)`` makes every random number on the CPU (from one generator per sample);
    ``apply(hr, draws)`` does the image work, batched, on the batch's device. ``lr_on_device`` says the
    DataModules serve HR images and make the LR ones on the device with this class; it is False for
    ``bicubic``, whose training LR images come from files (or the CPU MATLAB port) as before.
    """

    name = "degradation"
    lr_on_device = True
    scales: tuple[int, ...] | None = (2, 3, 4)  # None: any integer scale

    def __init__(self, scale: int, seed: int = 0) -> None:
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1 or (
                self.scales is not None and scale not in self.scales):
            allowed = "any integer >= 1" if self.scales is None else ", ".join(str(s) for s in self.scales)
            raise ConfigError(f"degradation={self.name} supports data.scale {allowed}, got {scale!r}")
        self.scale = scale
        self.seed = int(check_number("degradation.seed", seed, 0, 2**63 - 1, integer=True))

    def generators(self, keys: Tensor | Sequence[int], stream: int = 0) -> list[torch.Generator]:
        """One CPU generator per sample, seeded by (degradation seed, key, stream): separate streams keep
        one kind of draw independent of how many numbers another kind consumed."""
        values = keys.tolist() if isinstance(keys, Tensor) else list(keys)
        extra = (stream,) if stream else ()
        return [torch.Generator().manual_seed(mix(self.seed, k, *extra)) for k in values]

    def lr_size(self, size: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the LR image of an H x W HR image; H and W must be multiples of the scale."""
        h, w = int(size[0]), int(size[1])
        if h % self.scale or w % self.scale:
            raise ValueError(f"degradation={self.name}: the HR image is {w}x{h} (WxH), not a multiple of the "
                             f"scale {self.scale} (crop it first)")
        return h // self.scale, w // self.scale

    def draw(self, keys: Tensor, size: Sequence[int]) -> dict[str, Any]:
        """The random numbers of a batch of HR images of ``size`` (H, W), on the CPU."""
        return {}

    def apply(self, hr: Tensor, draws: dict[str, Any]) -> Tensor:
        """The LR batch of ``hr`` (uint8, on its device) with the random numbers ``draws`` (same device)."""
        raise NotImplementedError

    def __call__(self, hr: Tensor, keys: Tensor | Sequence[int]) -> Tensor:
        if hr.dtype != torch.uint8 or hr.ndim != 4 or hr.shape[1] != 3:
            raise ValueError(f"degradation={self.name} expects a B x 3 x H x W uint8 batch, got "
                             f"{tuple(hr.shape)} {hr.dtype}")
        keys = torch.as_tensor(keys, dtype=torch.int64).cpu()
        if keys.shape != (hr.shape[0],):
            raise ValueError(f"degradation={self.name}: {keys.numel()} keys for a batch of {hr.shape[0]}")
        self.lr_size(hr.shape[-2:])
        return self.apply(hr, to_device(self.draw(keys, hr.shape[-2:]), hr.device))

    def describe(self) -> dict[str, Any]:
        """The degradation's name, scale and seed (for result files)."""
        return {"degradation": self.name, "scale": self.scale, "seed": self.seed}


def resolve_degradation(degradation: Any, scale: int) -> Degradation | None:
    """A ``Degradation`` for ``scale`` from None (none: LR files as before), a ``Degradation`` of that
    scale, or a factory taking ``scale=`` (what a Hydra ``_partial_`` config instantiates to)."""
    if degradation is None:
        return None
    if isinstance(degradation, Degradation):
        if degradation.scale != scale:
            raise ConfigError(f"degradation {degradation.name} is for scale {degradation.scale}, "
                              f"data.scale={scale}")
        return degradation
    if not callable(degradation):
        raise ConfigError(f"degradation={degradation!r} is not allowed: expected a degradation config "
                          f"(degradation=bicubic, bd, dn or realistic)")
    return degradation(scale=scale)
