"""Pixel-level Self-Paced Learning (Lin et al., ICASSP 2020): SSIM-driven per-pixel loss weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pspl_lightning.errors import ConfigError
from pspl_lightning.filters import PaddedSeparableFilter, gaussian_kernel1d
from pspl_lightning.losses.base import BASE_LOSSES, charbonnier
from pspl_lightning.losses.ssim import C1, C2, ssim_map, ssim_map_exact
from pspl_lightning.pace import check_pace, pace_sigma

SSIM_MODES = ("official", "normalized")
SSIM_DTYPES = ("float32_exact", "float64", "float32")


class PSPLLoss(nn.Module):
    """PSPL loss: ``base(sr * w, hr * w)`` with ``w = max_weight * exp(-((SSIM(hr, sr) + 1) / sigma)^2)``.

    The weights are detached (no gradient flows through the SSIM map) and computed per RGB channel.
    A paced loss (:mod:`pspl_lightning.losses.paced`): in training, ``SRModule`` passes
    ``sigma_at(trainer.global_step)`` to :meth:`loss_and_weights`; used alone, pass ``sigma`` or call
    :meth:`set_step` first.

    ``ssim_mode="official"`` is the reference formula: SSIM on the images scaled to 0..255 with the [0, 1]
    constants C1 = 0.01^2, C2 = 0.03^2. Those constants are tiny against 0..255 variances, so in flat
    regions the SSIM is ill-conditioned: E[x^2] - mu^2 cancels (mu^2 up to 65025 against C2 = 9e-4), and
    the reference's float32 weights there are rounding noise (off by up to ~1.9 from the exact formula on
    scikit-image's astronaut). ``ssim_mode="normalized"`` computes SSIM on [0, 1] data with the same
    constants, as the paper describes; plain float32 misses there too (by ~3e-4 at sigma 3).

    ``ssim_dtype`` (null: ``"float32_exact"`` in both modes) chooses the arithmetic of the SSIM map:
    ``"float32_exact"`` is float32 with float64 quality (window statistics from local deviations, never
    ``E[x^2] - mu^2``; :func:`~pspl_lightning.losses.ssim.ssim_map_exact`): the weights match the float64
    formula to ~1e-6 at any sigma, on flat, saturated and textured data, and near SSIM = -1. Its
    compiled kernels run where ``torch.compile`` works and the batch has at least 262,144 pixels (float64
    moments otherwise: same weights). ``"float64"``: banded float64 moments (exact, slower on CPU);
    ``"float32"``: the reference's arithmetic (fast, wrong by up to ~1.9 in flat regions of ``official``).
    Timings: docs/BENCHMARKS.md.

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
            ssim_dtype = "float32_exact"
        if ssim_dtype not in SSIM_DTYPES:
            raise ConfigError(f"loss.ssim_dtype must be one of {list(SSIM_DTYPES)} or null, "
                              f"got {ssim_dtype!r}")
        check_pace(alpha, beta, step_unit)
        self.alpha, self.beta, self.step_unit = float(alpha), float(beta), int(step_unit)
        self.max_weight = float(max_weight)
        self.base, self.ssim_mode, self.charbonnier_eps = base, ssim_mode, float(charbonnier_eps)
        self.ssim_exact = ssim_dtype == "float32_exact"  # float32 arithmetic, exact method
        self.ssim_dtype = torch.float32 if self.ssim_exact else getattr(torch, ssim_dtype)
        self.sigma: float | None = None
        self._filter: PaddedSeparableFilter | None = None  # buffers reused from step to step

    def sigma_at(self, global_step: int) -> float:
        """Sigma this loss uses at optimizer step ``global_step``."""
        return pace_sigma(global_step, self.alpha, self.beta, self.step_unit)

    def check_run(self, max_steps: int | None) -> None:
        """Raise ``ConfigError`` naming ``loss.alpha``/``loss.beta`` if sigma is <= 0 within ``max_steps``."""
        check_pace(self.alpha, self.beta, self.step_unit, max_steps)

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
        The map gives SSIM + 1 directly (full relative precision where the weights are steepest).
        """
        if not sigma > 0:
            raise ValueError(f"PSPL sigma must be > 0, got {sigma}")
        scale = 255.0**2 if self.ssim_mode == "official" else 1.0
        if self._filter is None:
            self._filter = PaddedSeparableFilter(gaussian_kernel1d(11, 1.5, dtype=torch.float64))
        with torch.autocast(device_type=sr.device.type, enabled=False):
            args = {"c1": C1 / scale, "c2": C2 / scale, "filt": self._filter, "plus_one": True}
            if self.ssim_exact:
                s1 = ssim_map_exact(hr.detach(), sr.detach(), **args)
            else:
                s1 = ssim_map(hr.detach(), sr.detach(), dtype=self.ssim_dtype, **args)
            return s1.div_(sigma).square_().neg_().exp_().mul_(self.max_weight)

    def loss_and_weights(self, sr: Tensor, hr: Tensor, sigma: float | None = None) -> tuple[Tensor, Tensor]:
        """The loss and the detached weight map it used (for logging and the image panel)."""
        sigma = self.sigma if sigma is None else sigma
        if sigma is None:
            raise RuntimeError("PSPLLoss.sigma is unset: pass sigma= or call set_step(global_step) first")
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
                f"ssim_dtype={self.ssim_dtype_name!r}")

    @property
    def ssim_dtype_name(self) -> str:
        """The ``loss.ssim_dtype`` value in force: ``float32_exact``, ``float64`` or ``float32``."""
        return "float32_exact" if self.ssim_exact else str(self.ssim_dtype).removeprefix("torch.")
