"""MATLAB bicubic imresize against a loop-by-loop float64 re-implementation of MATLAB's algorithm, and on
images whose answer is known (constants, linear ramps)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pspl_lightning.imresize import imresize, make_lr, modcrop


def keys_a_half(x: float) -> float:
    """Keys' cubic with a = -0.5, written from its definition."""
    a, x = -0.5, abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x <= 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def reflect(j: int, n: int) -> int:
    """MATLAB's symmetric border (the edge pixel repeats), 1-based, applied until ``j`` is inside 1..n."""
    while j < 1 or j > n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def resize_1d(signal: list[float], scale: float) -> list[float]:
    """One axis of MATLAB's imresize, one output sample at a time, in float64."""
    n = len(signal)
    width = 4.0 / scale if scale < 1 else 4.0
    out = []
    for i in range(1, math.ceil(n * scale) + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        total = weight_sum = 0.0
        for j in range(left, left + math.ceil(width) + 2):
            w = scale * keys_a_half(scale * (u - j)) if scale < 1 else keys_a_half(u - j)
            total += w * signal[reflect(j, n) - 1]
            weight_sum += w
        out.append(total / weight_sum)
    return out


def reference_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """Rows first, then columns; uint8 images are rounded (half away from zero) and saturated after each
    axis, as MATLAB's class-preserving ``imresizemex`` does."""
    def to_uint8(x: np.ndarray) -> np.ndarray:
        def one(v: float) -> float:
            return math.floor(min(max(v, 0.0), 255.0) + 0.5)

        return np.array([[[one(v) for v in px] for px in row] for row in x], dtype=np.float64)

    data = img.astype(np.float64)
    squeeze = data.ndim == 2
    if squeeze:
        data = data[:, :, None]
    h, w, c = data.shape
    rows = np.array([[resize_1d(list(data[:, x, ch]), scale) for ch in range(c)] for x in range(w)])
    rows = rows.transpose(2, 0, 1)  # out_h x w x c
    if img.dtype == np.uint8:
        rows = to_uint8(rows)
    out_h = rows.shape[0]
    cols = np.array([[resize_1d(list(rows[y, :, ch]), scale) for ch in range(c)] for y in range(out_h)])
    out = cols.transpose(0, 2, 1)  # out_h x out_w x c
    if img.dtype == np.uint8:
        out = to_uint8(out).astype(np.uint8)
    return out[:, :, 0] if squeeze else out


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.7, 2.0])
def test_float_matches_reference(scale: float) -> None:
    img = np.random.default_rng(1).random((13, 17, 2)) * 255
    out = imresize(img, scale)
    assert out.shape == (math.ceil(13 * scale), math.ceil(17 * scale), 2)
    np.testing.assert_allclose(out, reference_imresize(img, scale), rtol=0, atol=1e-9)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4])
def test_uint8_matches_reference_exactly(scale: float) -> None:
    img = np.random.default_rng(2).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    out = imresize(img, scale)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, reference_imresize(img, scale))


def test_uint8_rounds_after_each_axis() -> None:
    """MATLAB rounds between the two passes: the result differs from rounding only the float result."""
    img = np.random.default_rng(3).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    once = np.floor(np.clip(imresize(img.astype(np.float64), 0.5), 0, 255) + 0.5).astype(np.uint8)
    twice = imresize(img, 0.5)
    diff = np.abs(once.astype(int) - twice.astype(int))
    assert 1 <= diff.max() <= 2 and 0.01 < (diff > 0).mean() < 0.5


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2.0])
def test_constant_image_stays_constant(scale: float) -> None:
    assert np.all(imresize(np.full((23, 31, 3), 77, np.uint8), scale) == 77)
    np.testing.assert_allclose(imresize(np.full((23, 31), 0.25), scale), 0.25, atol=1e-12)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_linear_ramp_gives_the_ramp_at_the_output_centres(s: int) -> None:
    """Away from the borders, output pixel j (0-based) sees the ramp at input position s*j + (s-1)/2: the
    mean of the s input pixels it covers (the kernel is symmetric about a half or whole pixel)."""
    w = 24 * s
    ramp = np.tile(2.0 * np.arange(w) + 10, (5, 1))  # value 2x + 10 at column x
    out = imresize(ramp, 1 / s)
    j = np.arange(out.shape[1])
    expected = 2.0 * (s * j + (s - 1) / 2) + 10
    interior = (s * j + (s - 1) / 2 - 2 * s >= 0) & (s * j + (s - 1) / 2 + 2 * s <= w - 1)
    assert interior.sum() >= 15
    np.testing.assert_allclose(out[:, interior], np.broadcast_to(expected[interior], out[:, interior].shape),
                               atol=1e-10)
    if s == 2:  # as uint8: 4j + 11, exactly
        out8 = imresize(ramp.astype(np.uint8).T.copy(), 0.5)  # a ramp down the rows this time
        np.testing.assert_array_equal(out8[interior, 0], 4 * j[interior] + 11)


def test_make_lr_crops_never_resizes() -> None:
    hr = np.random.default_rng(4).integers(0, 256, (31, 45, 3), dtype=np.uint8)
    np.testing.assert_array_equal(modcrop(hr, 4), hr[:28, :44])
    lr = make_lr(hr, 4)
    assert lr.shape == (7, 11, 3)
    np.testing.assert_array_equal(lr, reference_imresize(hr[:28, :44], 0.25))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="H x W or H x W x C"):
        imresize(np.zeros((2, 3, 4, 5)), 0.5)
    with pytest.raises(ValueError, match="scale must be > 0"):
        imresize(np.zeros((4, 4)), 0)
