"""Benchmark PSNR/SSIM against independent references on real photographs with real degradations.

References: numpy float64 (BT.601 Y written out here) and scikit-image's ``peak_signal_noise_ratio`` /
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pspl_lightning.metrics import PSNR, SSIM, psnr_rgb, psnr_y, quantize, rgb_to_y, ssim_rgb, ssim_y
from tests.helpers.degradations import degrade

PHOTOS = {"astronaut": skdata.astronaut()[:256, 100:356], "chelsea": skdata.chelsea()[:200, :240],
          "coffee": skdata.coffee()[100:300, 200:440]}


def _ref_quantize(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255.0) / 255.0


def _ref_y(x: np.ndarray) -> np.ndarray:
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x)).permute(2, 0, 1)[None]


CASES = [(p, k, c) for p in PHOTOS for k, c in (("bicubic_x2", 2), ("bicubic_x4", 4), ("jpeg25", 0),
                                              ("noise_clip", 3), ("blur", 2))]


@pytest.mark.parametrize(("photo", "kind", "crop"), CASES)
def test_y_metrics_match_numpy_and_skimage(photo: str, kind: str, crop: int) -> None:
    hr = PHOTOS[photo]
    sr = degrade(hr, kind).astype(np.float32)  # what a network gives; the reference sees the same values
    sl = (slice(crop, -crop), slice(crop, -crop)) if crop else (slice(None), slice(None))
    sr_y, hr_y = _ref_y(_ref_quantize(sr.astype(np.float64)))[sl], _ref_y(hr.astype(np.float64) / 255.0)[sl]
    ref_psnr = 10 * math.log10(255.0**2 / np.mean((sr_y - hr_y) ** 2))
    ref_ssim = structural_similarity(hr_y, sr_y, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=255)

    got_psnr = psnr_y(_t(sr), _t(hr), crop)  # float32 SR, uint8 HR
    got_ssim = ssim_y(_t(sr), _t(hr), crop)
    assert got_psnr.dtype == torch.float64 and got_psnr.shape == (1,)
    assert got_psnr.item() == pytest.approx(ref_psnr, abs=1e-4)
    assert got_psnr.item() == pytest.approx(peak_signal_noise_ratio(hr_y, sr_y, data_range=255), abs=1e-4)
    assert got_ssim.item() == pytest.approx(ref_ssim, abs=1e-5)
    assert 5 < ref_psnr < 60 and 0.1 < ref_ssim < 1  # a real degradation, not a trivial case


@pytest.mark.parametrize("kind", ["bicubic_x2", "jpeg25", "noise_clip"])
def test_rgb_metrics_match_skimage(kind: str) -> None:
    hr = PHOTOS["coffee"]
    sr8 = np.round(np.clip(degrade(hr, kind), 0, 1) * 255).astype(np.uint8)
    c = 2
    ref_psnr = peak_signal_noise_ratio(hr[c:-c, c:-c], sr8[c:-c, c:-c], data_range=255)
    ref_ssim = structural_similarity(hr[c:-c, c:-c].astype(np.float64), sr8[c:-c, c:-c].astype(np.float64),
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255, channel_axis=2)
    assert psnr_rgb(_t(sr8), _t(hr), c).item() == pytest.approx(ref_psnr, abs=1e-4)
    assert ssim_rgb(_t(sr8), _t(hr), c).item() == pytest.approx(ref_ssim, abs=1e-5)


def test_constant_offset_gives_the_analytic_psnr() -> None:
    """Every RGB value +3 levels shifts Y by 3 * 219 / 255 everywhere: PSNR = 20 log10(255 / that)."""
    hr = torch.from_numpy(PHOTOS["chelsea"].copy()).permute(2, 0, 1)[None].clamp(0, 250)
    sr = (hr.double() + 3) / 255.0
    expected = 20 * math.log10(255.0 / (3 * 219.0 / 255.0))
    assert psnr_y(sr, hr, 4).item() == pytest.approx(expected, abs=1e-9)
    assert psnr_rgb(sr, hr, 4).item() == pytest.approx(20 * math.log10(255.0 / 3), abs=1e-9)
    assert ssim_y(hr, hr, 4).item() == pytest.approx(1.0, abs=1e-12)
    assert psnr_y(hr, hr).item() == math.inf


def test_sr_is_rounded_to_8_bit_and_clamped() -> None:
    x = torch.tensor([-0.2, 0.0, 0.3, 0.49, 0.51, 254.4, 254.6, 300.0]).div(255).view(1, 1, 1, 8)
    assert (quantize(x) * 255).flatten().tolist() == [0, 0, 0, 0, 1, 254, 255, 255]
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert rgb_to_y(rgb).item() == pytest.approx(16 + 65.481)
    assert rgb_to_y(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)).item() == pytest.approx(235.0)


def test_batches_give_per_image_values() -> None:
    hrs = torch.stack([_t(PHOTOS[p][:128, :128])[0] for p in PHOTOS])
    srs = torch.stack([_t(degrade(PHOTOS[p][:128, :128], "blur"))[0] for p in PHOTOS]).float()
    batch = psnr_y(srs, hrs, 2)
    assert batch.shape == (3,)
    for i in range(3):
        assert batch[i].item() == psnr_y(srs[i : i + 1], hrs[i : i + 1], 2).item()
        single = ssim_y(srs[i : i + 1], hrs[i : i + 1], 2).item()
        assert ssim_y(srs, hrs, 2)[i].item() == pytest.approx(single, abs=1e-12)


def test_metric_classes_accumulate_sums_and_counts() -> None:
    pairs = [(_t(degrade(PHOTOS[p], k)).float(), _t(PHOTOS[p])) for p in PHOTOS for k in ("jpeg25", "blur")]
    psnr_m, ssim_m = PSNR(crop_border=2), SSIM(crop_border=2)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(psnr_m.compute().item())
    for sr, hr in pairs:
        psnr_m.update(sr, hr)
        ssim_m.update(sr, hr)
    per_image_psnr = [psnr_y(sr, hr, 2).item() for sr, hr in pairs]
    per_image_ssim = [ssim_y(sr, hr, 2).item() for sr, hr in pairs]
    assert psnr_m.total.dtype == torch.float64 and int(psnr_m.count) == len(pairs)
    assert psnr_m.compute().item() == pytest.approx(np.mean(per_image_psnr), abs=1e-12)
    assert ssim_m.compute().item() == pytest.approx(np.mean(per_image_ssim), abs=1e-12)
    psnr_m.reset()
    assert int(psnr_m.count) == 0


def test_rgb_metric_class() -> None:
    sr, hr = _t(degrade(PHOTOS["coffee"], "jpeg25")).float(), _t(PHOTOS["coffee"])
    m = PSNR(crop_border=3, y_channel=False)
    m.update(sr, hr)
    assert m.compute().item() == pytest.approx(psnr_rgb(sr, hr, 3).item(), abs=1e-12)


@pytest.mark.parametrize(("sr_shape", "hr_shape", "crop", "fn", "message"), [
    ((1, 3, 16, 16), (1, 3, 16, 18), 0, psnr_y, "SR and HR shapes differ"),
    ((1, 1, 16, 16), (1, 1, 16, 16), 0, psnr_y, "B x 3 x H x W"),
    ((1, 3, 16, 16), (1, 3, 16, 16), 8, psnr_y, "crop_border=8"),
    ((1, 3, 16, 16), (1, 3, 16, 16), 3, ssim_y, "at least 11 x 11"),
])
def test_bad_input_is_refused(sr_shape, hr_shape, crop, fn, message) -> None:
    with pytest.raises(ValueError, match=message):
        fn(torch.rand(sr_shape), torch.rand(hr_shape), crop)
