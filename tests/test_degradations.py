"""Degradations against independent implementations of the published scripts, statistics and ranges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pspl_lightning.data.sample import _photo
from pspl_lightning.data.sampling import ResumableRandomSampler
from pspl_lightning.degradations import Bicubic, BlurDown, NoisyBicubic, Realistic
from pspl_lightning.degradations.base import resolve_degradation
from pspl_lightning.degradations.matlab import fspecial_gaussian_1d, matlab_bicubic
from pspl_lightning.errors import ConfigError
from pspl_lightning.imresize import make_lr, modcrop


def _batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB's fspecial('gaussian', size, sigma), from its documented formula."""
    r = np.arange(size) - (size - 1) / 2
    x, y = np.meshgrid(r, r)
    h = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def matlab_nearest_indices(in_len: int, scale: int) -> np.ndarray:
    """0-based input rows that imresize(., 1/scale, 'nearest') keeps: MATLAB's contributions() with the box
    kernel of width 1, antialiasing off (as MATLAB does for 'nearest')."""
    s = 1.0 / scale
    x = np.arange(1, int(np.ceil(in_len * s)) + 1)
    u = x / s + 0.5 * (1 - 1 / s)
    left = np.floor(u - 0.5)
    idx = left[:, None] + np.arange(3)[None, :]
    dist = u[:, None] - idx
    box = (dist >= -0.5) & (dist < 0.5)
    return (idx[box].reshape(len(x)) - 1).astype(int)


def bd_reference(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The published BD script in numpy/scipy: imfilter replicate (correlation, float64), uint8(), nearest.
    Also returns the float blur, to tell rounding ties apart."""
    kernel = fspecial_gaussian(7, 1.6)
    blur = np.stack([ndimage.correlate(hr[..., c].astype(np.float64), kernel, mode="nearest")
                     for c in range(3)], axis=-1)
    rows, cols = matlab_nearest_indices(hr.shape[0], scale), matlab_nearest_indices(hr.shape[1], scale)
    blur8 = np.floor(np.clip(blur, 0, 255) + 0.5).astype(np.uint8)
    return blur8[rows][:, cols], blur[rows][:, cols]


def test_bd_kernel_is_fspecial() -> None:
    g = fspecial_gaussian_1d(7, 1.6)
    np.testing.assert_allclose(torch.outer(g[0], g[0]).numpy(), fspecial_gaussian(7, 1.6), rtol=0, atol=1e-15)
    # the centre tap by hand: 1 / (1 + 2 (e^(-1/5.12) + e^(-4/5.12) + e^(-9/5.12)))^2 = 1 / 3.90588^2
    assert fspecial_gaussian(7, 1.6)[3, 3] == pytest.approx(0.065550, abs=1e-5)


def test_nearest_rows_match_matlab() -> None:
    assert matlab_nearest_indices(12, 3).tolist() == [1, 4, 7, 10]
    assert matlab_nearest_indices(12, 2).tolist() == [1, 3, 5, 7, 9, 11]
    assert matlab_nearest_indices(12, 4).tolist() == [2, 6, 10]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bd_of_a_constant_is_the_constant(scale: int) -> None:
    hr = torch.stack([torch.full((3, 24, 36), v, dtype=torch.uint8) for v in (0, 37, 255)])
    lr = BlurDown(scale)(hr, [0, 1, 2])
    assert lr.shape == (3, 3, 24 // scale, 36 // scale)
    for i, v in enumerate((0, 37, 255)):
        assert torch.all(lr[i] == v)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bd_of_a_photo_equals_the_published_script(scale: int) -> None:
    hr = modcrop(_photo("astronaut")[:300, :360], scale)
    ours = _hwc(BlurDown(scale)(_batch(hr), [0])[0])
    ref, blur = bd_reference(hr, scale)
    assert ours.shape == ref.shape == (300 // scale, 360 // scale, 3)
    # a float64 reordering could round an exact tie (x.5) either way; this photo has none, so: all equal
    assert not np.any(np.abs(blur - np.floor(blur) - 0.5) < 1e-9)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_on_the_device_equals_the_numpy_port(scale: int) -> None:
    hr = modcrop(_photo("coffee"), scale)
    ours = _hwc(Bicubic(scale)(_batch(hr), [0])[0])
    np.testing.assert_array_equal(ours, make_lr(hr, scale))


def test_dn_without_noise_is_matlab_bicubic() -> None:
    hr = modcrop(_photo("chelsea"), 3)
    np.testing.assert_array_equal(_hwc(NoisyBicubic(3, sigma=0.0)(_batch(hr), [5])[0]), make_lr(hr, 3))


def test_dn_noise_statistics_on_flat_gray() -> None:
    hr = torch.full((1, 3, 600, 600), 128, dtype=torch.uint8)
    noise = NoisyBicubic(3, sigma=30.0)(hr, [7]).double() - 128  # 3 x 200 x 200 LR values, none clipped
    assert abs(float(noise.std()) - 30.0) < 0.03 * 30.0
    assert abs(float(noise.mean())) < 0.5
    assert torch.equal(noise, noise.round())  # 8-bit values


def test_dn_noise_is_a_function_of_seed_and_key() -> None:
    hr = torch.full((2, 3, 48, 48), 100, dtype=torch.uint8)
    dn = NoisyBicubic(2, seed=3)
    a, b = dn(hr, [11, 12]), dn(hr, [11, 12])
    assert torch.equal(a, b)  # same seed and keys: same images
    assert not torch.equal(a[0], a[1])  # another sample index: other noise
    assert torch.equal(dn(hr[:1], [12])[0], a[1])  # a sample's noise does not depend on its batch
    assert not torch.equal(NoisyBicubic(2, seed=4)(hr, [11, 12]), a)  # another degradation seed
    ranks = [ResumableRandomSampler(64, 2, seed=42, rank=r, world_size=2) for r in (0, 1)]
    keys = [torch.tensor([seed for _, seed in list(s)[:2]]) for s in ranks]
    assert not torch.equal(dn(hr, keys[0]), dn(hr, keys[1]))  # DDP ranks: other sample seeds, other noise


NARROW = {
    "kernel_size": [9, 13], "sigma": [0.5, 0.8], "motion_direction": [-0.5, 0.25],
    "resize_range": [0.5, 1.25], "noise_sigma": [4.0, 6.0], "poisson_scale": [0.2, 0.3],
    "jpeg_quality": [60.0, 70.0], "resize_modes": ["bilinear", "area"],
    "kernel_probs": {"iso": 1, "aniso": 1, "motion": 1}, "blur_prob": 0.5, "jpeg_prob": 0.5,
}


def test_realistic_draws_stay_in_their_ranges() -> None:
    deg = Realistic(4, stage1=NARROW, stage2={**NARROW, "sigma": [1.0, 1.1], "resize_range": [0.9, 1.1]},
                    final_modes=["area"])
    for first in range(0, 256, 32):
        keys = torch.arange(first, first + 32)
        draws = deg.draw(keys, (64, 64))
        assert draws["final_mode"] == "area"
        for name, sigma, resize in (("stage1", (0.5, 0.8), (0.5, 1.25)), ("stage2", (1.0, 1.1), (0.9, 1.1))):
            d = draws[name]
            assert set(d["kernel_size"].tolist()) <= {9, 11, 13}
            assert d["kernels"].shape == (32, 13, 13)
            torch.testing.assert_close(d["kernels"].sum((1, 2)), torch.ones(32), rtol=0, atol=1e-5)
            bounds = {"sigma_x": sigma, "sigma_y": sigma, "motion_direction": (-0.5, 0.25),
                      "noise_sigma": (4, 6), "poisson_scale": (0.2, 0.3), "jpeg_quality": (60, 70),
                      "motion_angle": (0, 360), "theta": (0, np.pi)}
            for key, (lo, hi) in bounds.items():
                assert float(d[key].min()) >= lo and float(d[key].max()) <= hi, (name, key)
            assert resize[0] <= d["resize"] <= resize[1]
            assert d["resize_mode"] in ("bilinear", "area")
            assert d["noise_field"].shape[-2:] == d["size"]
    blur = torch.cat([deg.draw(torch.arange(k, k + 32), (64, 64))["stage1"]["blur"]
                      for k in range(0, 256, 32)])
    assert 0.35 < float(blur.double().mean()) < 0.65  # blur_prob 0.5


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_realistic_sample_draws_depend_on_the_key_only(stage: str) -> None:
    """A sample's blur, noise and JPEG parameters are its own, whatever the batch (whose resizes differ)."""
    deg = Realistic(2)
    a, b = deg.draw(torch.tensor([5, 6]), (48, 48)), deg.draw(torch.tensor([5, 9]), (48, 48))
    assert (a["stage1"]["size"], a["stage2"]["size"]) != (b["stage1"]["size"], b["stage2"]["size"])
    a, b = a[stage], b[stage]
    for key in ("kernel_type", "sigma_x", "noise_sigma", "jpeg_quality", "kernels", "gray", "gaussian"):
        assert torch.equal(a[key][0], b[key][0]), key
    for key in ("sigma_x", "noise_sigma", "jpeg_quality"):
        assert not torch.equal(a[key][0], a[key][1]), key


@pytest.mark.parametrize("scale", [2, 4])
def test_realistic_output_shape_and_range(scale: int) -> None:
    hr = _batch(*(modcrop(_photo(n)[:96, :96], 4) for n in ("astronaut", "coffee", "chelsea")))
    deg = Realistic(scale)
    keys = torch.tensor([1, 2, 3])
    lr = deg.pipeline(hr.float() / 255, deg.draw(keys, hr.shape[-2:]))
    assert lr.shape == (3, 3, 96 // scale, 96 // scale) and lr.dtype == torch.float32
    assert float(lr.min()) >= 0 and float(lr.max()) <= 1
    lr8 = deg(hr, keys)
    assert lr8.dtype == torch.uint8 and torch.equal(lr8, deg(hr, keys))  # deterministic
    assert (lr8.float() - (lr * 255)).abs().max() <= 0.5 + 1e-4  # the 8-bit rounding of the same pipeline


def test_realistic_without_stages_is_the_final_resize() -> None:
    """Both stages off and area resizing: the LR is the 2x2 box average of HR, rounded."""
    hr = _batch(modcrop(_photo("coffee")[:64, :80], 2))
    deg = Realistic(2, stage1={"enabled": False}, stage2={"enabled": False}, final_modes=["area"])
    expect = torch.nn.functional.avg_pool2d(hr.double(), 2).round()
    assert (deg(hr, [0]).double() - expect).abs().max() <= 1  # float32 averaging may round a tie otherwise


def test_realistic_jpeg_changes_texture_not_flat_images() -> None:
    deg = Realistic(2)
    textured = torch.from_numpy(_photo("astronaut")[:64, :64]).permute(2, 0, 1)[None].float() / 255
    flat = torch.full((1, 3, 64, 64), 0.5)
    d = {"jpeg_index": [0], "jpeg_quality": torch.tensor([30.0])}
    assert float((deg._jpeg(textured, d) - textured).abs().mean()) > 3 / 255  # 4.4 levels measured
    # a flat gray has no AC energy to quantise: only the differentiable codec's own rounding (~1.4 levels)
    assert float((deg._jpeg(flat, d) - flat).abs().max()) < 2 / 255


@pytest.mark.parametrize(("make", "message"), [
    (lambda: BlurDown(3, kernel_size=6), "degradation.kernel_size=6 is not allowed: expected an odd"),
    (lambda: Realistic(4, stage1={"kernel_size": [7, 20]}), "degradation.stage1.kernel_size=20"),
    (lambda: Realistic(4, stage2={"noise_sigma": [30, 1]}), "degradation.stage2.noise_sigma=[30, 1] is not "
                                                            "allowed: min 30 > max 1"),
    (lambda: Realistic(4, stage1={"poisson_scale": [3, 0.5]}), "min 3 > max 0.5"),
    (lambda: Realistic(4, stage1={"resize_modes": ["lanczos"]}), "degradation.stage1.resize_modes"),
    (lambda: Realistic(4, stage1={"sigmaa": [1, 2]}), "unknown keys ['sigmaa']"),
    (lambda: BlurDown(5), "degradation=bd supports data.scale 2, 3, 4, got 5"),
    (lambda: NoisyBicubic(8), "degradation=dn supports data.scale 2, 3, 4, got 8"),
    (lambda: Realistic(1), "degradation=realistic supports data.scale 2, 3, 4, got 1"),
    (lambda: NoisyBicubic(2, sigma=-1), "degradation.sigma=-1"),
])
def test_bad_values_are_config_errors(make, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        make()
    assert message in str(exc.value)


def test_bicubic_takes_any_scale_and_factories_get_the_data_scale() -> None:
    assert Bicubic(5).scale == 5
    assert resolve_degradation(lambda scale: BlurDown(scale), 3).scale == 3
    assert resolve_degradation(None, 2) is None
    with pytest.raises(ConfigError, match="is for scale 2, data.scale=3"):
        resolve_degradation(BlurDown(2), 3)


def test_hr_not_a_multiple_of_the_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of the scale 3"):
        BlurDown(3)(torch.zeros(1, 3, 10, 12, dtype=torch.uint8), [0])


def test_matlab_bicubic_batches_like_single_images() -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (24, 30, 3), dtype=np.uint8) for _ in range(3)]
    batch = matlab_bicubic(_batch(*imgs), 3)
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(_hwc(batch[i]), make_lr(img, 3))


def test_blur_kernels_against_their_definitions() -> None:
    """Isotropic = kornia's k x k Gaussian zero-padded; anisotropic: the second moments of a Gaussian with
    stds (sx, sy) turned by theta, R diag(sx^2, sy^2) R^T; motion: kornia's line; off: the identity."""
    from kornia.filters import get_gaussian_kernel2d, get_motion_kernel2d

    from pspl_lightning.degradations.kernels import blur_kernels

    kind = torch.tensor([0, 1, 2, 1])  # iso, aniso, motion, aniso (off)
    ksize = torch.tensor([7, 41, 9, 41])
    sx, sy = torch.tensor([1.2, 4.0, 1.0, 4.0], dtype=torch.float64), torch.tensor([1.2, 1.5, 1.0, 1.5])
    theta = torch.tensor([0.0, 0.6, 0.0, 0.6], dtype=torch.float64)
    angle, direction = torch.tensor([0.0, 0.0, 30.0, 0.0]), torch.tensor([0.0, 0.0, 0.5, 0.0])
    on = torch.tensor([True, True, True, False])
    k = blur_kernels(41, kind, ksize, sx, sy.double(), theta, angle, direction, on)
    assert k.shape == (4, 41, 41) and k.dtype == torch.float32
    iso = get_gaussian_kernel2d((7, 7), torch.tensor([[1.2, 1.2]], dtype=torch.float64))[0]
    torch.testing.assert_close(k[0, 17:24, 17:24].double(), iso, rtol=0, atol=1e-7)
    outside = torch.ones(41, 41, dtype=torch.bool)
    outside[17:24, 17:24] = False
    assert not k[0][outside].any()  # zero outside its own 7 x 7 window
    r = torch.arange(41, dtype=torch.float64) - 20
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    w = k[1].double()
    cov = torch.tensor([[float((w * xx * xx).sum()), float((w * xx * yy).sum())],
                        [float((w * xx * yy).sum()), float((w * yy * yy).sum())]])
    c, s = np.cos(0.6), np.sin(0.6)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float32)
    torch.testing.assert_close(cov, rot @ torch.diag(torch.tensor([16.0, 2.25])) @ rot.T, rtol=0, atol=0.05)
    motion = get_motion_kernel2d(9, torch.tensor([30.0]), torch.tensor([0.5]))[0]
    torch.testing.assert_close(k[2, 16:25, 16:25], motion, rtol=0, atol=1e-7)
    assert float(k[3, 20, 20]) == 1.0 and float(k[3].abs().sum()) == 1.0


@pytest.mark.parametrize(("make", "scale", "ring"), [
    (BlurDown, 2, 2), (BlurDown, 3, 1), (BlurDown, 4, 1), (Bicubic, 2, 2), (Bicubic, 3, 2), (Bicubic, 4, 2)])
def test_a_patch_degraded_alone_matches_the_whole_image_inside_a_ring(make, scale: int, ring: int) -> None:
    """Training degrades each HR patch on its own: its LR equals the crop of the whole image's LR except in
    the outermost ``ring`` LR pixels, where the patch's own border padding replaces the image's pixels."""
    hr = _batch(_photo("astronaut")[:288, :288])
    deg = make(scale)
    whole = deg(hr, [0])[0]
    n, top, left = 24, 4, 6  # LR patch side and position (LR pixels)
    patch = hr[..., top * scale:(top + n) * scale, left * scale:(left + n) * scale].contiguous()
    alone = deg(patch, [0])[0]
    crop = whole[:, top:top + n, left:left + n]
    assert torch.equal(alone[:, ring:n - ring, ring:n - ring], crop[:, ring:n - ring, ring:n - ring])
    outer = alone[:, ring - 1:n - ring + 1, ring - 1:n - ring + 1] != crop[:, ring - 1:n - ring + 1,
                                                                            ring - 1:n - ring + 1]
    assert outer.any()  # and the ring is really where they differ
