"""PSPL loss, its SSIM map and the base losses against references written out here from the formulas.

The reference is numpy float64: 11 x 11 Gaussian window (sigma 1.5) applied with zero padding 5, the
SSIM formula with C1 = 0.01^2, C2 = 0.03^2 on 0..255 data (``official``) or on 0..1 data
(``normalized``). Images are real photographs with real degradations, plus flat and saturated regions
where the official formula is ill conditioned.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.filters import gaussian
from skimage.metrics import structural_similarity

from pspl_lightning.filters import PaddedSeparableFilter, gaussian_kernel1d
from pspl_lightning.losses import BASE_LOSSES, PSPLLoss, check_pace, pace_sigma, ssim_map
from pspl_lightning.losses import ssim as ssim_module
from pspl_lightning.losses.ssim import C1, C2, ssim_map_exact
from tests.helpers.degradations import degrade

PHOTOS = {"astronaut": skdata.astronaut()[:96, 150:246], "coffee": skdata.coffee()[150:246, 250:346],
          "chelsea": skdata.chelsea()[60:156, 100:196]}


def _with_flat(hr: np.ndarray) -> np.ndarray:
    """The photo with a flat mid-grey square, a saturated white square and a smooth ramp pasted in."""
    out = hr.copy()
    out[8:40, 8:40] = 128
    out[50:80, 20:44] = 255
    out[60:90, 55:90] = np.linspace(90, 110, 35).round().astype(np.uint8)[None, :, None]
    return out


def _pair(photo: str, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(hr, sr) as 1 x 3 x H x W float32 tensors in [0, 1]-ish."""
    hr = _with_flat(PHOTOS[photo])
    sr = degrade(hr, kind)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()  # noqa: E731
    return to_t(hr / 255.0), to_t(sr)


def _gauss11() -> np.ndarray:
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    return g / g.sum()


def _filter_zero_pad(img: np.ndarray) -> np.ndarray:
    """2-D correlation of H x W ``img`` with the 11 x 11 Gaussian, zero padding 5, as explicit sums."""
    g2 = np.outer(_gauss11(), _gauss11())
    h, w = img.shape
    padded = np.zeros((h + 10, w + 10))
    padded[5:-5, 5:-5] = img
    out = np.zeros((h, w))
    for i in range(11):
        for j in range(11):
            out += g2[i, j] * padded[i : i + h, j : j + w]
    return out


def _ref_ssim(hr: torch.Tensor, sr: torch.Tensor, official: bool) -> np.ndarray:
    """The reference SSIM map (C x H x W, float64) of the first image of a batch."""
    scale = 255.0 if official else 1.0
    out = []
    for c in range(hr.shape[1]):
        x, y = hr[0, c].double().numpy() * scale, sr[0, c].double().numpy() * scale
        mx, my = _filter_zero_pad(x), _filter_zero_pad(y)
        vx, vy = _filter_zero_pad(x * x) - mx**2, _filter_zero_pad(y * y) - my**2
        cxy = _filter_zero_pad(x * y) - mx * my
        out.append(((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    return np.stack(out)


def _ref_weights(ssim: np.ndarray, sigma: float, max_weight: float = 2.0) -> np.ndarray:
    return max_weight * np.exp(-(((ssim + 1) / sigma) ** 2))


CASES = [("astronaut", "bicubic_x2"), ("coffee", "jpeg20"), ("chelsea", "noise"),
         ("astronaut", "blur_offset")]


@pytest.mark.parametrize(("photo", "kind"), CASES)
@pytest.mark.parametrize("sigma", [0.2, 0.7, 3.0])
def test_official_weights_equal_float64_reference(photo: str, kind: str, sigma: float) -> None:
    hr, sr = _pair(photo, kind)
    w = PSPLLoss(ssim_mode="official").weight_map(sr, hr, sigma)
    ref = _ref_weights(_ref_ssim(hr, sr, official=True), sigma)
    assert w.dtype == torch.float32 and w.shape == hr.shape
    np.testing.assert_allclose(w[0].double().numpy(), ref, rtol=0, atol=1e-3)


@pytest.mark.parametrize(("photo", "kind"), CASES)
def test_normalized_weights_equal_float64_reference(photo: str, kind: str) -> None:
    hr, sr = _pair(photo, kind)
    loss = PSPLLoss(ssim_mode="normalized")
    assert loss.ssim_dtype == torch.float32
    w = loss.weight_map(sr, hr, 0.5)
    np.testing.assert_allclose(w[0].double().numpy(), _ref_weights(_ref_ssim(hr, sr, official=False), 0.5),
                               rtol=0, atol=1e-3)


def test_flat_regions_need_float64_in_official_mode() -> None:
    """The test data reach the ill-conditioned regime: float32 moments miss, float64 ones do not."""
    hr, sr = _pair("astronaut", "blur_offset")
    ref = _ref_weights(_ref_ssim(hr, sr, official=True), 0.7)
    err32 = np.abs(PSPLLoss(ssim_dtype="float32").weight_map(sr, hr, 0.7)[0].numpy() - ref).max()
    err64 = np.abs(PSPLLoss(ssim_dtype="float64").weight_map(sr, hr, 0.7)[0].numpy() - ref).max()
    assert err32 > 0.05
    assert err64 < 1e-4


# --- the exact float32 method (loss.ssim_dtype=float32_exact, the default) ---------------------------------

SIGMAS = [0.001, 0.01, 0.05, 0.2, 0.7, 3.0]  # sigma is 0.001 at step 0 of the reference pace
EXACT_KINDS = ["bicubic_x2", "bicubic_x4", "jpeg20", "noise", "noise_clip", "blur", "blur_offset",
               "near_flat", "mirror"]


def _pair_exact(photo: str, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_pair` plus two hard cases of the exact method's own.

    ``near_flat``: noise of 0.03 grey levels (the scale of sqrt(C2) on 0..255), so the window variances
    are of the order of C2 and every rounding of a mean shows. ``mirror``: each pixel reflected about its
    local mean (2 blur(hr) - hr), which puts SSIM within 1e-3 of -1, where the weights are steepest.
    """
    if kind not in ("near_flat", "mirror"):
        return _pair(photo, kind)
    hr = _with_flat(PHOTOS[photo]).astype(np.float64) / 255.0
    if kind == "near_flat":
        sr = hr + np.random.default_rng(1).normal(0, 0.03 / 255, hr.shape)
    else:
        sr = 2 * gaussian(hr, sigma=1.5, channel_axis=2) - hr
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()  # noqa: E731
    return to_t(hr), to_t(sr)


def _exact_weights(hr: torch.Tensor, sr: torch.Tensor, sigma: float, official: bool = True,
                   backend: str = "eager") -> np.ndarray:
    scale = 255.0**2 if official else 1.0
    s1 = ssim_map_exact(hr, sr, c1=C1 / scale, c2=C2 / scale, plus_one=True, backend=backend)
    return (2 * torch.exp(-((s1 / sigma) ** 2)))[0].double().numpy()


@pytest.mark.parametrize("official", [True, False], ids=["official", "normalized"])
@pytest.mark.parametrize("kind", EXACT_KINDS)
@pytest.mark.parametrize("photo", list(PHOTOS))
def test_exact_float32_weights_equal_float64_formula(photo: str, kind: str, official: bool) -> None:
    """Weights within 1e-5 of the float64 formula at every sigma, also where plain float32 misses by ~1."""
    hr, sr = _pair_exact(photo, kind)
    ref_s = _ref_ssim(hr, sr, official=official)
    for sigma in SIGMAS:
        w = _exact_weights(hr, sr, sigma, official)
        np.testing.assert_allclose(w, _ref_weights(ref_s, sigma), rtol=0, atol=1e-5, err_msg=f"sigma={sigma}")
    s = ssim_map_exact(hr, sr, c1=C1 / 255**2 if official else C1, c2=C2 / 255**2 if official else C2,
                       backend="eager")
    np.testing.assert_allclose(s[0].double().numpy(), ref_s, rtol=0, atol=2e-6)


def test_exact_cases_reach_the_hard_regimes() -> None:
    """The cases above contain flat windows, near-flat ones, SSIM near -1 and plain float32 failures."""
    hr, sr = _pair_exact("astronaut", "near_flat")
    x = hr[0, 0].double().numpy() * 255
    var = _filter_zero_pad(x * x) - _filter_zero_pad(x) ** 2
    assert np.abs(var[15:33, 15:33]).max() < 1e-6  # inside the pasted grey square: flat
    y = sr[0, 0].double().numpy() * 255
    var_y = _filter_zero_pad(y * y) - _filter_zero_pad(y) ** 2
    assert 2e-4 < np.median(var_y[15:33, 15:33]) < 4 * C2  # near flat: variance of the order of C2
    s1 = _ref_ssim(*_pair_exact("coffee", "mirror"), official=True) + 1
    assert s1.min() < 3e-3  # sigma 0.001..0.01 gives weights of order 1 there
    hr, sr = _pair("astronaut", "blur_offset")
    ref = _ref_weights(_ref_ssim(hr, sr, official=True), 0.7)
    plain = PSPLLoss(ssim_dtype="float32").weight_map(sr, hr, 0.7)[0].numpy()
    assert np.abs(plain - ref).max() > 1.5  # README: the reference's arithmetic is off by up to ~1.9 (of 2)
    hr, sr = _pair("astronaut", "bicubic_x2")
    ref = _ref_weights(_ref_ssim(hr, sr, official=False), 3.0)
    plain = PSPLLoss(ssim_mode="normalized", ssim_dtype="float32").weight_map(sr, hr, 3.0)[0].numpy()
    assert 1e-4 < np.abs(plain - ref).max() < 1e-3  # README: plain float32 misses by ~3e-4 in normalized mode


def test_exact_weights_at_ssim_minus_one() -> None:
    """Anti-correlated checkerboards: SSIM = -1 in the interior, the weight is max_weight at any sigma."""
    sign = (torch.arange(40)[:, None] + torch.arange(40)[None, :]) % 2 * 2 - 1
    t = 0.4 * sign.float().expand(1, 3, 40, 40)
    hr, sr = 0.5 + t, 0.5 - t
    ref_s = _ref_ssim(hr, sr, official=True)
    for sigma in SIGMAS:
        w = _exact_weights(hr, sr, sigma)
        np.testing.assert_allclose(w, _ref_weights(ref_s, sigma), rtol=0, atol=1e-5, err_msg=f"sigma={sigma}")
        np.testing.assert_allclose(w[:, 5:-5, 5:-5], 2.0, rtol=0, atol=1e-5)


def test_float64_path_gives_ssim_plus_one_at_full_precision() -> None:
    """SSIM + 1 from the float64 moments keeps its digits near -1 (SSIM rounded to float32, then + 1, not)."""
    hr, sr = _pair_exact("coffee", "mirror")
    ref_s = _ref_ssim(hr, sr, official=True)
    c = {"c1": C1 / 255**2, "c2": C2 / 255**2}
    s1 = ssim_map(hr, sr, dtype=torch.float64, plus_one=True, **c)[0].double().numpy()
    np.testing.assert_allclose(s1, ref_s + 1, rtol=1e-5, atol=0)
    for sigma in SIGMAS:
        w = PSPLLoss(ssim_dtype="float64").weight_map(sr, hr, sigma)[0].double().numpy()
        np.testing.assert_allclose(w, _ref_weights(ref_s, sigma), rtol=0, atol=1e-5, err_msg=f"sigma={sigma}")


def test_exact_batch_equals_float64_path() -> None:
    """A batch of different pairs: the exact kernels and the float64 moments give the same weights."""
    pairs = [_pair_exact(p, k) for p, k in [("astronaut", "near_flat"), ("coffee", "mirror"),
                                            ("chelsea", "blur_offset"), ("coffee", "noise_clip")]]
    hr, sr = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    c = {"c1": C1 / 255**2, "c2": C2 / 255**2, "plus_one": True}
    exact = ssim_map_exact(hr, sr, backend="eager", **c)
    f64 = ssim_map_exact(hr, sr, backend="float64", **c)
    assert exact.shape == hr.shape and exact.dtype == torch.float32
    for sigma in SIGMAS:
        w_exact, w_f64 = (2 * torch.exp(-((s1 / sigma) ** 2)) for s1 in (exact, f64))
        torch.testing.assert_close(w_exact, w_f64, rtol=0, atol=1e-5)


class _FakeCompiled:
    """Stands in for the compiled kernels: records the calls and runs the same code eagerly."""

    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail, self.keys, self.broken = 0, fail, set(), None

    def usable(self, key: tuple) -> bool:
        return self.broken is None

    def __call__(self, xp, yp, taps, c1, c2, plus_one):  # noqa: ANN001, ANN204
        self.calls += 1
        if self.fail:
            raise RuntimeError("InductorError: no working C++ compiler found\nmore text")
        return ssim_module._exact_kernels(xp, yp, taps, c1, c2, plus_one)


def test_auto_backend_compiles_large_batches_only(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCompiled()
    monkeypatch.setattr(ssim_module, "_COMPILED", fake)
    assert 8 * 3 * 64 * 64 < ssim_module.MIN_COMPILED_PIXELS <= 16 * 3 * 96 * 96  # sample set no, recipe yes
    loss = PSPLLoss()
    assert loss.ssim_exact and loss.ssim_dtype == torch.float32 and "float32_exact" in repr(loss)
    small = torch.rand(8, 3, 64, 64)  # the sample set's batch, 98,304 pixels: float64 moments, no compile
    loss.weight_map(small, small.flip(-1), 0.5)
    assert fake.calls == 0 and loss._filter is not None and loss._filter._key is not None
    big_hr = torch.rand(12, 3, 96, 96)  # 331,776 pixels: the compiled kernels
    big_sr = (big_hr + 0.02 * torch.randn(big_hr.shape)).clamp(0, 1)
    w = loss.weight_map(big_sr, big_hr, 0.5)
    assert fake.calls == 1
    ref = PSPLLoss(ssim_dtype="float64").weight_map(big_sr, big_hr, 0.5)
    torch.testing.assert_close(w, ref, rtol=0, atol=1e-5)


def test_failed_compile_falls_back_to_float64_once(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    fake = _FakeCompiled(fail=True)
    monkeypatch.setattr(ssim_module, "_COMPILED", fake)
    hr = torch.rand(12, 3, 96, 96)
    sr = (hr + 0.02 * torch.randn(hr.shape)).clamp(0, 1)
    loss = PSPLLoss()
    with caplog.at_level("WARNING", logger="pspl_lightning.losses.ssim"):
        w1 = loss.weight_map(sr, hr, 0.5)
        w2 = loss.weight_map(sr, hr, 0.5)
    assert fake.calls == 1  # the second call goes straight to float64
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["exact float32 SSIM: torch.compile failed (RuntimeError: InductorError: no working C++ "
                     "compiler found); using float64 moments (exact, slower)"]
    ref = PSPLLoss(ssim_dtype="float64").weight_map(sr, hr, 0.5)
    torch.testing.assert_close(w1, ref, rtol=0, atol=0)
    torch.testing.assert_close(w2, ref, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="no working C\\+\\+ compiler"):
        ssim_map_exact(hr, sr, backend="compiled")


def test_compiled_keys_are_capped_below_dynamos_recompile_limit() -> None:
    compiled = ssim_module._Compiled()
    assert torch._dynamo.config.recompile_limit > ssim_module.MAX_COMPILED_KEYS
    compiled.keys = {("shape", i) for i in range(ssim_module.MAX_COMPILED_KEYS)}
    assert compiled.usable(("shape", 0)) and not compiled.usable(("shape", 99))
    compiled.broken = "no compiler"
    assert not compiled.usable(("shape", 0))
    with pytest.raises(ValueError, match="backend must be 'auto', 'compiled', 'eager' or 'float64', "
                                         "got 'cuda'"):
        ssim_map_exact(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), backend="cuda")


def test_benchmarks_reference_method_is_the_reference_formula() -> None:
    """scripts/bench_step.py's ReferencePSPL (timed against the default) computes the reference's loss."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_step.py"
    spec = importlib.util.spec_from_file_location("pspl_scripts_bench_step", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 48, 48, generator=gen)  # texture everywhere: float32 SSIM is exact there
    sr = (hr + 0.1 * torch.randn(hr.shape, generator=gen)).clamp(0, 1).requires_grad_(True)
    for sigma in (0.3, 0.8, 3.0):
        ref = bench.ReferencePSPL(sigma)(sr, hr)
        exact = PSPLLoss(ssim_dtype="float64")(sr, hr, sigma=sigma).item()
        assert ref.item() == pytest.approx(exact, rel=1e-5)
    ref.backward()  # autograd through the L1 only: the weights are detached
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    hr, sr = _pair("coffee", "jpeg20")  # with flat regions: the default loss is the exact formula's
    w = _ref_weights(_ref_ssim(hr, sr, official=True), 0.8)
    by_hand = np.abs((sr[0].double().numpy() - hr[0].double().numpy()) * w).mean()
    assert PSPLLoss()(sr, hr, sigma=0.8).item() == pytest.approx(by_hand, rel=1e-5)

@pytest.mark.slow
def test_compiled_kernels_equal_eager_kernels() -> None:
    """The torch.compile kernels (C++ here) against the same code run op by op, and the float64 formula."""
    pairs = [_pair_exact(p, k) for p, k in [("astronaut", "near_flat"), ("coffee", "mirror"),
                                            ("chelsea", "blur_offset")]]
    hr, sr = torch.cat([p[0] for p in pairs] * 10), torch.cat([p[1] for p in pairs] * 10)  # 829,440 px
    c = {"c1": C1 / 255**2, "c2": C2 / 255**2, "plus_one": True}
    ssim_module._COMPILED.keys.clear()
    compiled = ssim_map_exact(hr, sr, **c)  # auto: large enough to compile
    assert ssim_module._COMPILED.keys == {ssim_module._key((90, 106, 106), hr.device, tuple(
        gaussian_kernel1d(11, 1.5, dtype=torch.float64).tolist()), c["c1"], c["c2"], True)}
    eager = ssim_map_exact(hr, sr, backend="eager", **c)
    torch.testing.assert_close(compiled, eager, rtol=2e-6, atol=0)
    ref_s = _ref_ssim(hr[1:2], sr[1:2], official=True)
    for sigma in SIGMAS:
        w = (2 * torch.exp(-((compiled[1] / sigma) ** 2))).double().numpy()
        np.testing.assert_allclose(w, _ref_weights(ref_s, sigma), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("photo", "kind"), CASES[:2])
def test_ssim_map_interior_matches_scikit_image(photo: str, kind: str) -> None:
    hr, sr = _pair(photo, kind)
    ours = ssim_map(hr.double(), sr.double(), c1=C1, c2=C2)[0].numpy()
    for c in range(3):
        _, full = structural_similarity(hr[0, c].double().numpy(), sr[0, c].double().numpy(), full=True,
                                        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0)
        np.testing.assert_allclose(ours[c, 5:-5, 5:-5], full[5:-5, 5:-5], rtol=0, atol=1e-6)


def test_ssim_map_equals_reference_including_borders() -> None:
    hr, sr = _pair("coffee", "bicubic_x2")
    ours = ssim_map(hr.double() * 255, sr.double() * 255)[0].double().numpy()
    np.testing.assert_allclose(ours, _ref_ssim(hr, sr, official=True), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("photo", "kind"), CASES[:2])
def test_pspl_l1_equals_reference_loss_over_255(photo: str, kind: str) -> None:
    hr, sr = _pair(photo, kind)
    sigma = 0.8
    loss = PSPLLoss(ssim_mode="official", base="l1")(sr, hr, sigma=sigma)
    w = _ref_weights(_ref_ssim(hr, sr, official=True), sigma)
    x, y = hr[0].double().numpy() * 255, sr[0].double().numpy() * 255
    ref = np.abs(y * w - x * w).mean()  # the reference: L1(sr * w, hr * w) on 0..255
    assert loss.item() == pytest.approx(ref / 255, rel=1e-4)


def test_batched_weights_equal_per_image_weights() -> None:
    """Images in a batch do not leak into each other (the padding separates them)."""
    pairs = [_pair(p, k) for p, k in CASES[:3]]
    hr, sr = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    loss = PSPLLoss()
    batched = loss.weight_map(sr, hr, 0.5)
    for i, (h, s) in enumerate(pairs):
        torch.testing.assert_close(batched[i : i + 1], loss.weight_map(s, h, 0.5), rtol=0, atol=1e-6)


def test_filter_buffers_follow_shape_changes() -> None:
    hr, sr = _pair("coffee", "noise")
    loss = PSPLLoss()
    full = loss.weight_map(sr, hr, 0.5)
    crop = loss.weight_map(sr[..., :40, :72], hr[..., :40, :72], 0.5)
    again = loss.weight_map(sr, hr, 0.5)
    ref_crop = _ref_weights(_ref_ssim(hr[..., :40, :72], sr[..., :40, :72], official=True), 0.5)
    np.testing.assert_allclose(crop[0].numpy(), ref_crop, rtol=0, atol=1e-3)
    torch.testing.assert_close(again, full, rtol=0, atol=0)


def test_padded_separable_filter_matches_explicit_sums() -> None:
    rng = np.random.default_rng(3)
    imgs = rng.random((2, 17, 23))
    filt = PaddedSeparableFilter(gaussian_kernel1d(11, 1.5, dtype=torch.float64))
    filt.input(2, 17, 23, torch.float64, torch.device("cpu")).copy_(torch.from_numpy(imgs))
    out = filt.run().numpy()
    for i in range(2):
        np.testing.assert_allclose(out[i], _filter_zero_pad(imgs[i]), rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="before input"):
        PaddedSeparableFilter(gaussian_kernel1d()).run()
    with pytest.raises(ValueError, match="odd number of taps"):
        PaddedSeparableFilter(torch.ones(4))


@pytest.mark.parametrize(("step", "alpha", "beta", "unit", "expected"),
                         [(0, 1.0, 0.0, 1000, 0.001), (999, 1.0, 0.0, 1000, 1.0), (9, 0.3, 0.1, 10, 0.4),
                          (299_999, 1.0, 0.0, 1000, 300.0), (5, 0.0, 0.5, 1000, 0.5)])
def test_pace_sigma_at_given_steps(step: int, alpha: float, beta: float, unit: int, expected: float) -> None:
    assert pace_sigma(step, alpha, beta, unit) == pytest.approx(expected, rel=1e-12)
    loss = PSPLLoss(alpha=alpha, beta=beta, step_unit=unit)
    assert loss.set_step(step) == pytest.approx(expected, rel=1e-12) and loss.sigma == loss.sigma_at(step)


@pytest.mark.parametrize("max_weight", [2.0, 3.5])
def test_weight_at_ssim_minus_one_is_max_weight(max_weight: float) -> None:
    """hr = 0.5 + t, sr = 0.5 - t with a zero-mean texture t: equal means, cov = -var, SSIM -> -1."""
    sign = (torch.arange(40)[:, None] + torch.arange(40)[None, :]) % 2 * 2 - 1
    t = 0.4 * sign.float().expand(1, 3, 40, 40)
    hr, sr = 0.5 + t, 0.5 - t
    loss = PSPLLoss(max_weight=max_weight)
    inner = (slice(None), slice(None), slice(5, -5), slice(5, -5))
    s = ssim_map(hr.double() * 255, sr.double() * 255)[inner]
    assert s.max().item() < -1 + 1e-6
    w = loss.weight_map(sr, hr, 0.05)[inner]
    torch.testing.assert_close(w, torch.full_like(w, max_weight), rtol=0, atol=1e-5)
    assert loss.weight_map(hr, hr, 0.05).max().item() < 1e-30  # SSIM 1: weight exp(-(2 / 0.05)^2)


def test_gradient_does_not_flow_through_the_weights() -> None:
    hr, sr = _pair("coffee", "bicubic_x2")
    sr.requires_grad_(True)
    loss = PSPLLoss()
    value, w = loss.loss_and_weights(sr, hr, sigma=0.6)
    value.backward()
    assert w is not None and not w.requires_grad and w.grad_fn is None
    expected = w * torch.sign(sr.detach() - hr) / sr.numel()  # d/dsr mean(w |sr - hr|) with w constant
    torch.testing.assert_close(sr.grad, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("base", ["mse", "charbonnier"])
def test_mse_and_charbonnier_bases(base: str) -> None:
    hr, sr = _pair("chelsea", "jpeg20")
    loss = PSPLLoss(base=base, charbonnier_eps=1e-2)
    value = loss(sr, hr, sigma=0.9).item()
    w = _ref_weights(_ref_ssim(hr, sr, official=True), 0.9)
    d = (sr[0].double().numpy() - hr[0].double().numpy()) * w
    ref = (d**2).mean() if base == "mse" else np.sqrt(d**2 + 1e-4).mean()
    assert value == pytest.approx(ref, rel=1e-4)
    assert set(BASE_LOSSES) == {"l1", "mse", "charbonnier"}


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"loss\.base must be one of \['charbonnier', 'l1', 'mse'\], "
                                         r"got 'l2'"):
        PSPLLoss(base="l2")
    with pytest.raises(ValueError, match=r"loss\.ssim_mode must be one of \['official', 'normalized'\]"):
        PSPLLoss(ssim_mode="exact")
    with pytest.raises(ValueError, match=r"loss\.max_weight must be > 0, got 0"):
        PSPLLoss(max_weight=0)
    with pytest.raises(ValueError, match=r"loss\.ssim_dtype must be one of \['float32_exact', 'float64', "
                                         r"'float32'\] or null, got 'float16'"):
        PSPLLoss(ssim_dtype="float16")
    with pytest.raises(ValueError, match=r"loss\.step_unit must be a positive number of steps, got 0"):
        PSPLLoss(step_unit=0)
    with pytest.raises(RuntimeError, match="PSPLLoss.sigma is unset"):
        PSPLLoss()(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="PSPL sigma must be > 0, got 0"):
        PSPLLoss().weight_map(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), 0.0)
    with pytest.raises(ValueError, match=r"ssim_map expects two B x C x H x W tensors of one shape, got "
                                         r"\(1, 3, 16, 16\) and \(1, 3, 16, 15\)"):
        ssim_map(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))


def test_check_pace_names_alpha_and_beta() -> None:
    with pytest.raises(ValueError, match=r"loss\.alpha=0\.0, loss\.beta=0\.0.* it is 0 at step 0"
                                         r".*loss\.alpha > 0"):
        PSPLLoss(alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match=r"loss\.alpha=-1\.0, loss\.beta=0\.5.* at step 999"):
        check_pace(-1.0, 0.5, 1000, max_steps=1000)
    with pytest.raises(ValueError, match=r"loss\.alpha=-1\.0, loss\.beta=0\.5.* eventually"):
        check_pace(-1.0, 0.5, 1000)
    check_pace(-1.0, 0.5, 1000, max_steps=400)  # sigma stays >= 0.1 for 400 steps
    assert math.isclose(pace_sigma(399, -1.0, 0.5, 1000), 0.1)
