"""Pixel-level Self-Paced Learning (Lin et al., ICASSP 2020): SSIM-driven per-pixel loss weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pspl_lightning.errors import ConfigError
from pspl_lightning.filters import PaddedSeparableFilter, gaussian_kernel1d
from pspl_lightning.losses.base import BASE_LOSSES, charbonnier
from pspl_lightning.losses.ssim import C1, C2, ssim_map
from pspl_lightning.pace import check_pace, pace_sigma

SSIM_MODES = ("official", "normalized")


class PSPLLoss(nn.Module):
    """PSPL loss: ``base(sr * w, hr * w)`` with ``w = max_weight * exp(-((SSIM(hr, sr) + 1) / sigma)^2)``.

    The weights are detached (no gradient flows through the SSIM map) and computed per RGB channel.
    ``sigma`` is set from outside before each step (the :class:`~pspl_lightning.callbacks.PSPLPace`
    callback, from ``trainer.global_step``) or passed to :meth:`forward`.

    ``ssim_mode="official"`` is the reference formula: SSIM on the images scaled to 0..255 with the [0, 1]
    constants C1 = 0.01^2, C2 = 0.03^2. Those constants are tiny against 0..255 variances, so in flat
    regions the SSIM is ill-conditioned: E[x^2] - mu^2 cancels (mu^2 up to 65025 against C2 = 9e-4), and
    the reference's float32 weights there are rounding noise (off by up to ~1.9 from the exact formula on
    scikit-image's astronaut). We therefore compute the local moments in float64 by default
    (``ssim_dtype="float64"``), which gives the exact formula's weights to ~1e-6 on any data (float64
    costs about 2.3x the float32 time on CPU, see docs/BENCHMARKS.md). ``ssim_mode="normalized"``
    computes SSIM on [0, 1] data with the same constants, as the paper describes, and is well conditioned
    in float32 (its default).

    Inputs are float RGB in [0, 1]; with ``official`` and ``base="l1"`` the loss equals the reference's
    (0..255) loss divided by 255.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.0,
        max_weight: float = 2.0,
        step_unit: int = 1000,
        base: str = "l1",
        ssim_mode: str = "official",
        charbonnier_eps: float = 1e-3,
        ssim_dtype: str | None = None,
    ) -> None:
        super().__init__()
        for key, value in (("alpha", alpha), ("beta", beta), ("max_weight", max_weight)):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"loss.{key}={value!r} is not allowed: expected a number")
        if not isinstance(step_unit, int) or isinstance(step_unit, bool):
            raise ConfigError(f"loss.step_unit={step_unit!r} is not allowed: expected a positive number of "
                              f"steps")
        if base not in BASE_LOSSES:
            raise ConfigError(f"loss.base must be one of {sorted(BASE_LOSSES)}, got {base!r}")
        if ssim_mode not in SSIM_MODES:
            raise ConfigError(f"loss.ssim_mode must be one of {list(SSIM_MODES)}, got {ssim_mode!r}")
        if not max_weight > 0:
            raise ConfigError(f"loss.max_weight must be > 0, got {max_weight}")
        if ssim_dtype is None:
            ssim_dtype = "float64" if ssim_mode == "official" else "float32"
        if ssim_dtype not in ("float32", "float64"):
            raise ConfigError(f"loss.ssim_dtype must be 'float32', 'float64' or null, got {ssim_dtype!r}")
        check_pace(alpha, beta, step_unit)
        self.alpha, self.beta, self.step_unit = float(alpha), float(beta), int(step_unit)
        self.max_weight = float(max_weight)
        self.base, self.ssim_mode, self.charbonnier_eps = base, ssim_mode, float(charbonnier_eps)
        self.ssim_dtype = getattr(torch, ssim_dtype)
        self.sigma: float | None = None
        self._filter: PaddedSeparableFilter | None = None  # buffers reused from step to step

    def sigma_at(self, global_step: int) -> float:
        """Sigma this loss uses at optimizer step ``global_step``."""
        return pace_sigma(global_step, self.alpha, self.beta, self.step_unit)

    def set_step(self, global_step: int) -> float:
        """Set sigma for optimizer step ``global_step`` and return it."""
        self.sigma = self.sigma_at(global_step)
        return self.sigma

    @torch.no_grad()
    def weight_map(self, sr: Tensor, hr: Tensor, sigma: float) -> Tensor:
        """Detached per-pixel, per-channel float32 weights (B x C x H x W), computed without a graph.

        ``official`` SSIM on 0..255 with the [0, 1] constants equals SSIM on the [0, 1] data with the
        constants divided by 255^2 (SSIM is invariant to scaling the data and the constants together),
        which saves two passes over the images. Autocast is off: the map is float32 or float64 by design.
        """
        if not sigma > 0:
            raise ValueError(f"PSPL sigma must be > 0, got {sigma}")
        scale = 255.0**2 if self.ssim_mode == "official" else 1.0
        if self._filter is None:
            self._filter = PaddedSeparableFilter(gaussian_kernel1d(11, 1.5, dtype=torch.float64))
        with torch.autocast(device_type=sr.device.type, enabled=False):
            s = ssim_map(hr.detach(), sr.detach(), c1=C1 / scale, c2=C2 / scale, dtype=self.ssim_dtype,
                         filt=self._filter)
            return s.add_(1.0).div_(sigma).square_().neg_().exp_().mul_(self.max_weight)

    def loss_and_weights(self, sr: Tensor, hr: Tensor, sigma: float | None = None) -> tuple[Tensor, Tensor]:
        """The loss and the detached weight map it used (for logging and the image panel)."""
        sigma = self.sigma if sigma is None else sigma
        if sigma is None:
            raise RuntimeError("PSPLLoss.sigma is unset: pass sigma= or add the PSPLPace callback to the "
                               "trainer")
        w = self.weight_map(sr, hr, sigma)
        sr32, hr32 = sr.float(), hr.float()
        if self.base == "l1":  # |w sr - w hr| = w |sr - hr| since w >= 0: one product instead of two
            loss = ((sr32 - hr32).abs() * w).mean()
        elif self.base == "mse":
            loss = ((sr32 - hr32) * w).square().mean()
        else:
            loss = charbonnier(sr32 * w, hr32 * w, self.charbonnier_eps)
        return loss, w

    def forward(self, sr: Tensor, hr: Tensor, sigma: float | None = None) -> Tensor:
        return self.loss_and_weights(sr, hr, sigma)[0]

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, max_weight={self.max_weight}, "
                f"step_unit={self.step_unit}, base={self.base!r}, ssim_mode={self.ssim_mode!r}, "
                f"ssim_dtype={str(self.ssim_dtype).removeprefix('torch.')}")
