"""Blind-SR degradations: a second-order pipeline in the manner of Real-ESRGAN (Wang et al., ICCVW 2021)
and BSRGAN (Zhang et al., ICCV 2021), on the device with kornia.

Each stage: blur (isotropic / anisotropic Gaussian or motion kernel, per sample) -> resize (up, down or
keep; area, bilinear or bicubic; per batch, as Real-ESRGAN does, since a batch must keep one size) ->
Gaussian or Poisson noise, colour or gray (per sample) -> JPEG (per sample). Stage 1 resizes relative to
the HR size, stage 2 relative to the LR size; then a final resize to the LR size, and stage 2's JPEG is
applied last, at the LR size (one of Real-ESRGAN's two orders). The default ranges are Real-ESRGAN's;
every one is a config value and each stage can be switched off.

Departures, for determinism and speed: the noise fields come from each sample's CPU generator (so a
sample's LR image does not depend on the device), Poisson noise uses its normal approximation
``N(lam, lam)`` with ``lam = 256 x`` (exact mean and variance; the discrete law differs only in the
darkest levels), and JPEG is kornia's differentiable codec (Real-ESRGAN's DiffJPEG works the same way).
kornia.augmentation's noise and JPEG transforms are not used because they draw from torch's global RNG,
which cannot give every sample its own generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from pspl_lightning.degradations.base import Degradation, check_number, check_odd_size, check_range, mix
from pspl_lightning.degradations.kernels import KERNEL_TYPES, blur_kernels
from pspl_lightning.errors import ConfigError

RESIZE_KINDS = ("up", "down", "keep")
RESIZE_MODES = ("area", "bilinear", "bicubic")
POISSON_PEAK = 256.0  # photons at white: an 8-bit image's levels (Real-ESRGAN's value for 8-bit images)
_UNIFORMS = 15  # uniform draws per sample and stage (a fixed count keeps every stream stable)


@dataclass(frozen=True)
class Stage:
    """The ranges and probabilities of one stage (the defaults are Real-ESRGAN's first order)."""

    enabled: bool = True
    blur_prob: float = 1.0
    kernel_size: tuple[int, int] = (7, 21)
    kernel_probs: Mapping[str, float] = field(default_factory=lambda: {"iso": 0.6, "aniso": 0.3,
                                                                        "motion": 0.1})
    sigma: tuple[float, float] = (0.2, 3.0)
    motion_direction: tuple[float, float] = (-1.0, 1.0)
    resize_probs: Mapping[str, float] = field(default_factory=lambda: {"up": 0.2, "down": 0.7, "keep": 0.1})
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_modes: tuple[str, ...] = RESIZE_MODES
    noise_prob: float = 1.0
    gaussian_noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 30.0)
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 1.0
    jpeg_quality: tuple[float, float] = (30.0, 95.0)

    @classmethod
    def from_config(cls, key: str, cfg: Mapping[str, Any] | None, base: Stage) -> Stage:
        """``base`` with the values of ``cfg`` (a config node), each checked; errors name ``key.<field>``."""
        cfg = dict(cfg or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ConfigError(f"{key} has unknown keys {unknown}; expected some of {sorted(names)}")
        stage = replace(base, **cfg)
        return stage._checked(key)

    def _checked(self, key: str) -> Stage:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"{key}.enabled={self.enabled!r} is not allowed: expected true or false")
        for name in ("blur_prob", "noise_prob", "gaussian_noise_prob", "gray_noise_prob", "jpeg_prob"):
            check_number(f"{key}.{name}", getattr(self, name), 0.0, 1.0)
        lo, hi = check_range(f"{key}.kernel_size", self.kernel_size, 3, 99, integer=True)
        check_odd_size(f"{key}.kernel_size", lo)
        check_odd_size(f"{key}.kernel_size", hi)
        resize = check_range(f"{key}.resize_range", self.resize_range, 1e-3, 16.0)
        if not resize[0] <= 1.0 <= resize[1]:
            raise ConfigError(f"{key}.resize_range={list(self.resize_range)} is not allowed: it must "
                              f"contain 1 (down-scales below 1, up-scales above)")
        modes = list(self.resize_modes)
        if not modes or any(m not in RESIZE_MODES for m in modes):
            raise ConfigError(f"{key}.resize_modes={modes} is not allowed: expected a non-empty list of "
                              f"{list(RESIZE_MODES)}")
        return replace(
            self, kernel_size=(int(lo), int(hi)),
            kernel_probs=_probabilities(f"{key}.kernel_probs", self.kernel_probs, KERNEL_TYPES),
            sigma=check_range(f"{key}.sigma", self.sigma, 1e-3, 100.0),
            motion_direction=check_range(f"{key}.motion_direction", self.motion_direction, -1.0, 1.0),
            resize_probs=_probabilities(f"{key}.resize_probs", self.resize_probs, RESIZE_KINDS),
            resize_range=resize, resize_modes=tuple(modes),
            noise_sigma=check_range(f"{key}.noise_sigma", self.noise_sigma, 0.0, 255.0),
            poisson_scale=check_range(f"{key}.poisson_scale", self.poisson_scale, 0.0, 100.0),
            jpeg_quality=check_range(f"{key}.jpeg_quality", self.jpeg_quality, 1.0, 100.0),
        )


STAGE2_DEFAULTS = Stage(blur_prob=0.8, sigma=(0.2, 1.5), resize_probs={"up": 0.3, "down": 0.4, "keep": 0.3},
                        resize_range=(0.3, 1.2), noise_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5))


def _probabilities(key: str, value: Any, names: Sequence[str]) -> dict[str, float]:
    """Non-negative weights over ``names`` (missing names weigh 0), normalised to sum 1."""
    value = dict(value or {})
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ConfigError(f"{key} has unknown entries {unknown}; expected some of {list(names)}")
    weights = {n: check_number(f"{key}.{n}", value.get(n, 0.0), 0.0) for n in names}
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError(f"{key}={value} is not allowed: the weights must not all be 0")
    return {n: w / total for n, w in weights.items()}


def _pick(u: Tensor, probs: Mapping[str, float]) -> Tensor:
    """Categorical indices (into ``probs``' order) from uniforms ``u``."""
    cum = torch.tensor(list(probs.values()), dtype=torch.float64).cumsum(0)
    return torch.searchsorted(cum[:-1], u.contiguous(), right=True)


def _lerp(u: Tensor | float, bounds: tuple[float, float]) -> Tensor | float:
    return bounds[0] + u * (bounds[1] - bounds[0])


def _choice(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _per_sample(values: Tensor) -> Tensor:
    """B values as B x 1 x 1 x 1, to scale or select whole images."""
    return values[:, None, None, None]


def _resize(x: Tensor, size: Sequence[int], mode: str) -> Tensor:
    size = (int(size[0]), int(size[1]))  # (a pinned batch turns tuples into lists)
    if tuple(x.shape[-2:]) == size:
        return x
    corners = {"align_corners": False} if mode != "area" else {}
    return F.interpolate(x, size=size, mode=mode, **corners)


class Realistic(Degradation):
    """Blind SR (``degradation=realistic``): two stages of blur, resize, noise and JPEG, then the LR size."""

    name = "realistic"

    def __init__(self, scale: int, stage1: Mapping[str, Any] | None = None,
                 stage2: Mapping[str, Any] | None = None, final_modes: Sequence[str] = RESIZE_MODES,
                 seed: int = 0) -> None:
        super().__init__(scale, seed)
        self.stage1 = Stage.from_config("degradation.stage1", stage1, Stage())
        self.stage2 = Stage.from_config("degradation.stage2", stage2, STAGE2_DEFAULTS)
        self.final_modes = tuple(final_modes)
        if not self.final_modes or any(m not in RESIZE_MODES for m in self.final_modes):
            raise ConfigError(f"degradation.final_modes={list(final_modes)} is not allowed: expected a "
                              f"non-empty list of {list(RESIZE_MODES)}")

    # --- random numbers (CPU) --------------------------------------------------------------------------
    @staticmethod
    def _resize_draw(stage: Stage, u: Tensor) -> tuple[float, str]:
        """(factor, mode) of a stage from three uniforms."""
        kind = RESIZE_KINDS[int(_pick(u[0], stage.resize_probs))]
        lo, hi = stage.resize_range
        factor = {"up": 1.0 + float(u[1]) * (hi - 1.0), "down": lo + float(u[1]) * (1.0 - lo),
                  "keep": 1.0}[kind]
        return factor, _choice(stage.resize_modes, float(u[2]))

    def _stage_draw(self, stage: Stage, keys: Tensor, index: int, size: tuple[int, int]) -> dict[str, Any]:
        """Per-sample parameters of stage ``index``, its kernels and its standard-normal noise fields at
        ``size``, each from its own stream (a sample's parameters do not depend on the batch's sizes)."""
        u = torch.stack([torch.rand(_UNIFORMS, generator=g, dtype=torch.float64)
                         for g in self.generators(keys, stream=2 * index)])
        z = torch.stack([torch.randn(3, *size, generator=g)
                         for g in self.generators(keys, stream=2 * index + 1)])
        sizes = list(range(stage.kernel_size[0], stage.kernel_size[1] + 1, 2))
        d: dict[str, Any] = {
            "blur": u[:, 0] < stage.blur_prob,
            "kernel_type": _pick(u[:, 1], stage.kernel_probs),
            "kernel_size": torch.tensor(sizes)[(u[:, 2] * len(sizes)).long().clamp(max=len(sizes) - 1)],
            "sigma_x": _lerp(u[:, 3], stage.sigma),
            "sigma_y": _lerp(u[:, 4], stage.sigma),
            "theta": u[:, 5] * math.pi,
            "motion_angle": u[:, 6] * 360.0,
            "motion_direction": _lerp(u[:, 7], stage.motion_direction),
            "noise": u[:, 8] < stage.noise_prob,
            "gaussian": u[:, 9] < stage.gaussian_noise_prob,
            "noise_sigma": _lerp(u[:, 10], stage.noise_sigma),
            "poisson_scale": _lerp(u[:, 11], stage.poisson_scale),
            "gray": u[:, 12] < stage.gray_noise_prob,
            "jpeg": u[:, 13] < stage.jpeg_prob,
            "jpeg_quality": _lerp(u[:, 14], stage.jpeg_quality),
        }
        d["sigma_y"] = torch.where(d["kernel_type"] == KERNEL_TYPES.index("iso"), d["sigma_x"], d["sigma_y"])
        d["kernels"] = blur_kernels(stage.kernel_size[1], d["kernel_type"], d["kernel_size"], d["sigma_x"],
                                    d["sigma_y"], d["theta"], d["motion_angle"], d["motion_direction"],
                                    d["blur"])
        d["noise_field"] = torch.where(_per_sample(d["gray"]), z[:, :1].expand_as(z), z)
        d["jpeg_index"] = torch.nonzero(d["jpeg"]).flatten().tolist()  # a list stays on the host: no sync
        return d

    def draw(self, keys: Tensor, size: Sequence[int]) -> dict[str, Any]:
        """Per-batch resizes (from all the batch's keys) and per-sample stage parameters and noise fields."""
        h, w = int(size[0]), int(size[1])
        lh, lw = self.lr_size((h, w))
        batch = torch.Generator().manual_seed(mix(self.seed, -1, *keys.tolist()))
        u = torch.rand(7, generator=batch, dtype=torch.float64)
        draws: dict[str, Any] = {"final_mode": _choice(self.final_modes, float(u[6]))}
        if self.stage1.enabled:
            factor, mode = self._resize_draw(self.stage1, u[0:3])
            h, w = max(1, int(h * factor)), max(1, int(w * factor))
            draws["stage1"] = {**self._stage_draw(self.stage1, keys, 1, (h, w)), "resize": factor,
                               "resize_mode": mode, "size": (h, w)}
        if self.stage2.enabled:
            factor, mode = self._resize_draw(self.stage2, u[3:6])
            h, w = max(1, int(lh * factor)), max(1, int(lw * factor))
            draws["stage2"] = {**self._stage_draw(self.stage2, keys, 2, (h, w)), "resize": factor,
                               "resize_mode": mode, "size": (h, w)}
        return draws

    # --- image work (device) ---------------------------------------------------------------------------
    @staticmethod
    def _noise(x: Tensor, d: dict[str, Any]) -> Tensor:
        z = d["noise_field"].to(x.dtype)
        gaussian = z * _per_sample(d["noise_sigma"].to(x.dtype) / 255.0)
        level = kornia.color.rgb_to_grayscale(x).expand_as(x).where(_per_sample(d["gray"]), x)
        shot = level.clamp(min=0).div(POISSON_PEAK).sqrt()  # std of Poisson(256 x) / 256
        poisson = z * shot * _per_sample(d["poisson_scale"].to(x.dtype))
        noise = torch.where(_per_sample(d["gaussian"]), gaussian, poisson)
        return (x + noise * _per_sample(d["noise"])).clamp(0, 1)

    @staticmethod
    def _jpeg(x: Tensor, d: dict[str, Any]) -> Tensor:
        """JPEG of the samples listed in ``d["jpeg_index"]`` at their ``jpeg_quality``."""
        on = list(d["jpeg_index"])
        if not on:
            return x
        out = x.clone()
        out[on] = kornia.enhance.jpeg_codec_differentiable(x[on], d["jpeg_quality"][on].to(x.dtype))
        return out.clamp(0, 1)

    def _stage(self, x: Tensor, d: dict[str, Any], jpeg: bool) -> Tensor:
        x = kornia.filters.filter2d(x, d["kernels"].to(x.dtype), border_type="replicate")
        x = _resize(x, d["size"], d["resize_mode"]).clamp(0, 1)
        x = self._noise(x, d)
        return self._jpeg(x, d) if jpeg else x

    def pipeline(self, x: Tensor, draws: dict[str, Any]) -> Tensor:
        """The degraded LR of a float batch in [0, 1] (B x 3 x H x W), float in [0, 1]."""
        lh, lw = self.lr_size(x.shape[-2:])
        if "stage1" in draws:
            x = self._stage(x, draws["stage1"], jpeg=True)
        if "stage2" in draws:
            x = self._stage(x, draws["stage2"], jpeg=False)
        x = _resize(x, (lh, lw), draws["final_mode"]).clamp(0, 1)
        return self._jpeg(x, draws["stage2"]) if "stage2" in draws else x

    def apply(self, hr: Tensor, draws: dict[str, Any]) -> Tensor:
        lr = self.pipeline(hr.to(torch.float32) / 255.0, draws)
        return (lr * 255.0).round_().clamp_(0, 255).to(torch.uint8)

    def describe(self) -> dict[str, Any]:
        stages = {name: {f.name: getattr(st, f.name) for f in fields(Stage)}
                  for name, st in (("stage1", self.stage1), ("stage2", self.stage2))}
        return {**super().describe(), **stages, "final_modes": list(self.final_modes)}
