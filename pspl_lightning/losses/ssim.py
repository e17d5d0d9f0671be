"""Per-pixel SSIM map as used by PSPL: 11 x 11 Gaussian (sigma 1.5), per channel, zero padding.

Two ways to the same formula. :func:`ssim_map` filters the moments E[x], E[y], E[x^2 + y^2], E[xy] with
banded matrix products in a chosen dtype (float64 is exact; float32 is the reference's arithmetic, whose
``E[x^2] - mu^2`` cancels). :func:`ssim_map_exact` gets float32 results of float64 quality from window
statistics that never subtract large numbers, in two fused stencil kernels (see :func:`_row_stats`).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import Tensor

from pspl_lightning.filters import PaddedSeparableFilter, gaussian_kernel1d

C1 = 0.01**2
C2 = 0.03**2

# Inputs (B * C * H * W pixels) from which ``ssim_map_exact(backend="auto")`` runs the compiled kernels:
# the recipe's 16 x 3 x 96 x 96 (442,368) and larger. Smaller ones (the sample set's 8 x 3 x 64 x 64, tests)
# take the float64 moments, exact too and cheap there, where a first compile (tens of seconds on a CPU,
# docs/BENCHMARKS.md) would cost a short run more than it saves.
MIN_COMPILED_PIXELS = 2**18
# Distinct (shape, device, constants) keys compiled per process; TorchDynamo's own limit is 8 graphs per
# function (grad or inference mode make more than one per key), beyond which it would silently run the
# kernels eagerly (slow); later keys take the float64 moments.
MAX_COMPILED_KEYS = 4
# Fusion thresholds of Inductor: keep each level one loop nest in registers instead of materialising the
# per-tap terms (faster on CPU than Inductor's defaults, docs/BENCHMARKS.md).
INDUCTOR_OPTIONS = {"realize_reads_threshold": 16, "realize_cpu_opcount_threshold": 1000,
                    "realize_cpu_acc_reads_threshold": 64}
Backend = Literal["auto", "compiled", "eager", "float64"]

log = logging.getLogger(__name__)


def ssim_from_terms(mu_p: Tensor, mu_d: Tensor, var_p: Tensor, var_d: Tensor, c1: float, c2: float,
                    plus_one: bool = False) -> Tensor:
    """SSIM (or SSIM + 1 with ``plus_one``) from window means and variances of ``p = x + y``, ``d = x - y``.

    The textbook formula rewritten without cancellation (mu_x^2 + mu_y^2 = (mu_p^2 + mu_d^2) / 2,
    var_x + var_y = (var_p + var_d) / 2, 2 cov = (var_p - var_d) / 2): luminance ``1 - a`` with
    ``a = mu_d^2 / (mu_x^2 + mu_y^2 + c1)``, contrast-structure ``1 - q`` with
    ``q = var_d / (var_x + var_y + c2)``, and ``SSIM + 1 = a + (1 - a) r`` with
    ``r = 2 - q = (var_p + 2 c2) / (var_x + var_y + c2)``: for images >= 0 (0 <= a <= 1) a sum of non-negative
    terms, so SSIM + 1 keeps its relative precision near SSIM = -1, where the PSPL weights are steepest.
    """
    vsum = (var_p + var_d).mul_(0.5).add_(c2)
    a = mu_d.square().div_((mu_p.square() + mu_d.square()).mul_(0.5).add_(c1))
    if plus_one:
        return (var_p + 2 * c2).div_(vsum).mul_(1 - a).add_(a)
    return (1 - a).mul_(1 - var_d / vsum)


def ssim_map(
    x: Tensor,
    y: Tensor,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    c1: float = C1,
    c2: float = C2,
    dtype: torch.dtype | None = None,
    filt: PaddedSeparableFilter | None = None,
    plus_one: bool = False,
) -> Tensor:
    """SSIM of ``x`` and ``y`` (B x C x H x W) at every pixel and channel, same size, as float32.

    Local statistics use a normalised Gaussian window applied per channel with zero padding, exactly as
    the PSPL reference (border pixels see the zeros). ``c1``/``c2`` are absolute: scale them to the data
    range for the textbook SSIM. The moments and the cancelling differences ``var = E[x^2] - mu^2``,
    ``cov = E[xy] - mu_x mu_y`` are computed in ``dtype`` (default: the dtype of ``x``); float64 is exact
    on any data, float32 is not where the constants are small against mu^2 (see ``PSPLLoss``). The rest
    (:func:`ssim_from_terms`) runs in float32. ``filt`` reuses buffers across calls; ``plus_one`` returns
    SSIM + 1 at full relative precision.
    """
    _check_pair(x, y)
    dtype = x.dtype if dtype is None else dtype
    if filt is None:
        filt = PaddedSeparableFilter(gaussian_kernel1d(window_size, sigma, dtype=torch.float64))
    elif filt.kernel.numel() != window_size:
        raise ValueError(f"filt has a {filt.kernel.numel()}-tap kernel, window_size is {window_size}")
    b, c, h, w = x.shape
    # Four filtered images: x, y, x^2 + y^2 (var_x and var_y only appear summed) and xy.
    ax, ay, a_sq, a_xy = filt.input(4 * b * c, h, w, dtype, x.device).view(4, b, c, h, w).unbind(0)
    ax.copy_(x)
    ay.copy_(y)
    torch.mul(ax, ax, out=a_sq).addcmul_(ay, ay)
    torch.mul(ax, ay, out=a_xy)
    mu_x, mu_y, e_sq, e_xy = filt.run().view(4, b, c, h, w).unbind(0)
    var_sum = e_sq.addcmul_(mu_x, mu_x, value=-1).addcmul_(mu_y, mu_y, value=-1)  # in place: reused buffer
    cov2 = e_xy.addcmul_(mu_x, mu_y, value=-1).mul_(2)
    f32 = {"dtype": torch.float32, "memory_format": torch.contiguous_format}
    terms = (mu_x + mu_y, mu_x - mu_y, var_sum + cov2, var_sum.sub_(cov2))
    return ssim_from_terms(*(t.to(**f32) for t in terms), c1, c2, plus_one)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"ssim_map expects two B x C x H x W tensors of one shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )


def _row_stats(xp: Tensor, yp: Tensor, taps: tuple[float, ...]) -> Tensor:
    """Level 1 of the exact method: horizontal window statistics of ``p = x + y`` and ``d = x - y``.

    ``xp``, ``yp``: N x (H + 2r) x (W + 2r), zero-padded. For every row and output column the deviations
    from the window's centre pixel (``e = x_k - x_c``, exact or nearly so: local differences) give
    ``S1 = sum g e`` and ``S2 = sum g e^2``; the row variance is ``S2 - S1^2`` where S1^2 <= var / g_c
    (the centre is one of the samples), so it keeps ~10 eps of relative precision instead of the
    ``eps * mu^2`` absolute error of ``E[x^2] - mu^2``. Returns 4 x N x (H + 2r) x W:
    (row mean - centre, row variance) of p, then of d.
    """
    r = len(taps) // 2
    w = xp.shape[-1] - 2 * r
    xc, yc = xp[..., r : r + w], yp[..., r : r + w]
    s1p = s2p = s1d = s2d = torch.zeros_like(xc)
    for k, g in enumerate(taps):
        if k == r:  # the centre's deviation is zero
            continue
        ex, ey = xp[..., k : k + w] - xc, yp[..., k : k + w] - yc
        ep, ed = ex + ey, ex - ey
        s1p, s2p = s1p + g * ep, s2p + g * (ep * ep)
        s1d, s2d = s1d + g * ed, s2d + g * (ed * ed)
    return torch.stack((s1p, s2p - s1p * s1p, s1d, s2d - s1d * s1d))


def _column_stats(xp: Tensor, yp: Tensor, rows: Tensor, taps: tuple[float, ...], c1: float, c2: float,
                  plus_one: bool) -> Tensor:
    """Level 2: combine the row statistics of each column window, then the SSIM formula; N x H x W.

    Parallel-variance identity: ``var = sum_i g_i var_row(i) + sum_i g_i (mean_row(i) - mu)^2``, the second
    sum again from deviations against the centre row. A row mean is kept as its centre pixel plus the
    offset from level 1, so differences of row means are differences of pixels plus differences of small
    offsets (never of two rounded means near 1).
    """
    r = len(taps) // 2
    h, w = xp.shape[-2] - 2 * r, xp.shape[-1] - 2 * r
    xc, yc = xp[..., r : r + w], yp[..., r : r + w]
    off_p, var_ph, off_d, var_dh = rows.unbind(0)
    x0, y0, op0, od0 = xc[:, r : r + h], yc[:, r : r + h], off_p[:, r : r + h], off_d[:, r : r + h]
    vp, vd = taps[r] * var_ph[:, r : r + h], taps[r] * var_dh[:, r : r + h]
    t1p = t2p = t1d = t2d = torch.zeros_like(x0)
    for k, g in enumerate(taps):
        if k == r:
            continue
        ex, ey = xc[:, k : k + h] - x0, yc[:, k : k + h] - y0
        ap = (ex + ey) + (off_p[:, k : k + h] - op0)
        ad = (ex - ey) + (off_d[:, k : k + h] - od0)
        vp, vd = vp + g * var_ph[:, k : k + h], vd + g * var_dh[:, k : k + h]
        t1p, t2p = t1p + g * ap, t2p + g * (ap * ap)
        t1d, t2d = t1d + g * ad, t2d + g * (ad * ad)
    var_p, var_d = vp + (t2p - t1p * t1p), vd + (t2d - t1d * t1d)
    mu_p = (x0 + y0) + (op0 + t1p)
    mu_d = (x0 - y0) + (od0 + t1d)
    return ssim_from_terms(mu_p, mu_d, var_p, var_d, c1, c2, plus_one)


def _exact_kernels(xp: Tensor, yp: Tensor, taps: tuple[float, ...], c1: float, c2: float,
                   plus_one: bool) -> Tensor:
    return _column_stats(xp, yp, _row_stats(xp, yp, taps), taps, c1, c2, plus_one)


class _Compiled:
    """The two levels compiled by ``torch.compile`` (once per process and key), or why they cannot be."""

    def __init__(self) -> None:
        self.rows = self.columns = None
        self.keys: set[tuple] = set()
        self.broken: str | None = None

    def usable(self, key: tuple) -> bool:
        if self.broken is not None:
            return False
        if not torch._dynamo.is_dynamo_supported():
            self.broken = "torch.compile is not supported on this platform"
            return False
        return key in self.keys or len(self.keys) < MAX_COMPILED_KEYS

    def __call__(self, xp: Tensor, yp: Tensor, taps: tuple[float, ...], c1: float, c2: float,
                 plus_one: bool) -> Tensor:
        if self.rows is None:
            self.rows = torch.compile(_row_stats, dynamic=False, options=INDUCTOR_OPTIONS)
            self.columns = torch.compile(_column_stats, dynamic=False, options=INDUCTOR_OPTIONS)
        out = self.columns(xp, yp, self.rows(xp, yp, taps), taps, c1, c2, plus_one)
        self.keys.add(_key(tuple(xp.shape), xp.device, taps, c1, c2, plus_one))
        return out


_COMPILED = _Compiled()


def _key(shape: tuple[int, ...], device: torch.device, taps: tuple[float, ...], c1: float, c2: float,
         plus_one: bool) -> tuple:
    """What a compiled graph is specialised on: padded shape, device, window and constants."""
    return (shape, device, taps, c1, c2, plus_one)


def ssim_map_exact(
    x: Tensor,
    y: Tensor,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    c1: float = C1,
    c2: float = C2,
    plus_one: bool = False,
    backend: Backend = "auto",
    filt: PaddedSeparableFilter | None = None,
) -> Tensor:
    """:func:`ssim_map` in float32 arithmetic with float64 quality on any data (flat, saturated, ramps).

    Every variance is a sum of non-negative terms built from local differences (:func:`_row_stats`,
    :func:`_column_stats`, :func:`ssim_from_terms`), so its error is a few float32 eps of itself: the
    PSPL weights match the float64 formula to ~1e-6 at any sigma (tests/test_losses.py). ``backend``:
    ``"compiled"`` runs the two levels as ``torch.compile`` kernels (C++ on CPU, Triton on CUDA);
    ``"eager"`` runs the same code op by op (slow; for tests and machines without a compiler);
    ``"float64"`` is :func:`ssim_map` with float64 moments; ``"auto"`` compiles inputs of at least
    :data:`MIN_COMPILED_PIXELS` where ``torch.compile`` works and takes float64 otherwise (a failed compile
    is logged once). ``filt`` is the float64 path's buffer cache.
    """
    _check_pair(x, y)
    if backend not in ("auto", "compiled", "eager", "float64"):
        raise ValueError(f"backend must be 'auto', 'compiled', 'eager' or 'float64', got {backend!r}")
    taps = tuple(gaussian_kernel1d(window_size, sigma, dtype=torch.float64).tolist())
    b, c, h, w = x.shape
    r = window_size // 2
    auto = backend == "auto"
    if auto:
        key = _key((b * c, h + 2 * r, w + 2 * r), x.device, taps, c1, c2, plus_one)
        backend = "compiled" if x.numel() >= MIN_COMPILED_PIXELS and _COMPILED.usable(key) else "float64"
    if backend == "float64":
        return ssim_map(x, y, window_size=window_size, sigma=sigma, c1=c1, c2=c2, dtype=torch.float64,
                        filt=filt, plus_one=plus_one)
    padded = x.new_zeros((2, b * c, h + 2 * r, w + 2 * r), dtype=torch.float32)
    padded[0, :, r : r + h, r : r + w] = x.reshape(b * c, h, w)
    padded[1, :, r : r + h, r : r + w] = y.reshape(b * c, h, w)
    xp, yp = padded.unbind(0)
    if backend == "eager":
        return _exact_kernels(xp, yp, taps, c1, c2, plus_one).view(b, c, h, w)
    try:
        return _COMPILED(xp, yp, taps, c1, c2, plus_one).view(b, c, h, w)
    except Exception as err:  # no C++ compiler, unsupported device, ...: exact float64 moments instead
        if not auto:
            raise
        _COMPILED.broken = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        log.warning("exact float32 SSIM: torch.compile failed (%s); using float64 moments (exact, slower)",
                    _COMPILED.broken)
        return ssim_map(x, y, window_size=window_size, sigma=sigma, c1=c1, c2=c2, dtype=torch.float64,
                        filt=filt, plus_one=plus_one)
