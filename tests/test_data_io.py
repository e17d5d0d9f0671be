"""Every image becomes 8-bit RGB: gray, 1-bit, gray+alpha, RGBA, palette, 16-bit, CMYK, YCbCr, LAB and HSV
files; floating-point images are refused."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pspl_lightning.data.io import ImageReadError, read_image


def _png16_rgb(path: Path, arr: np.ndarray) -> None:
    """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_gray_is_replicated(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and out.flags.writeable
    assert all(np.array_equal(out[:, :, c], gray) for c in range(3))


def test_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = np.random.default_rng(0).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])
    la = np.stack([rgba[:, :, 0], rgba[:, :, 3]], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.repeat(la[:, :, :1], 3, axis=2))


def test_palette_becomes_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = (200, 10, 30)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), rgb)


def test_16bit_gray_is_scaled_to_8bit(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 7, 1000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out[0, :, 0].tolist() == [0, 7, 4, 255]  # round(v / 257)
    assert np.array_equal(out[:, :, 0], out[:, :, 2])


def test_16bit_rgb_is_scaled_to_8bit(tmp_path: Path) -> None:
    arr = np.array([[[0, 257 * 3, 65535], [257 * 200, 257, 257 * 128]]], dtype=np.uint16)
    _png16_rgb(tmp_path / "rgb16.png", arr)
    out = read_image(tmp_path / "rgb16.png")
    assert out.dtype == np.uint8 and out.tolist() == [[[0, 3, 255], [200, 1, 128]]]


def test_not_an_image_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(ImageReadError, match=r"x\.png: cannot decode image"):
        read_image(tmp_path / "x.png")
    with pytest.raises(ImageReadError, match=r"y\.png: file not found"):
        read_image(tmp_path / "y.png")


def test_1bit_gray_is_black_or_white(tmp_path: Path) -> None:
    """A 1-bit image (Pillow mode "1", read as booleans) becomes 0 / 255 in R, G and B."""
    bits = np.array([[0, 1, 1, 0, 1], [1, 0, 0, 1, 1]], dtype=bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    out = read_image(tmp_path / "b.png")
    assert out.shape == (2, 5, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[:, :, c], bits.astype(np.uint8) * 255) for c in range(3))


@pytest.mark.parametrize(("mode", "fmt"), [("CMYK", "TIFF"), ("CMYK", "JPEG"), ("YCbCr", "TIFF"),
                                           ("LAB", "TIFF")])
def test_colour_modes_are_converted_by_pillow(tmp_path: Path, mode: str, fmt: str) -> None:
    """CMYK, YCbCr and LAB files read as Pillow's ``convert("RGB")``, not as their raw channels."""
    channels = len(Image.new(mode, (1, 1)).getbands())
    arr = np.random.default_rng(1).integers(0, 256, (6, 7, channels), dtype=np.uint8)
    path = tmp_path / f"c.{fmt.lower()}"
    Image.fromarray(arr, mode).save(path, format=fmt)
    with Image.open(path) as im:
        assert im.mode == mode
        raw, expected = np.array(im), np.array(im.convert("RGB"))
    out = read_image(path)
    assert out.shape == (6, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, raw[:, :, :3])  # the channels were converted, not passed through


def test_cmyk_known_colours(tmp_path: Path) -> None:
    """No ink is white, full black ink is black, full cyan is (0, 255, 255)."""
    cmyk = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0]]], dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "k.tif")
    assert read_image(tmp_path / "k.tif").tolist() == [[[255, 255, 255], [0, 0, 0], [0, 255, 255]]]


def test_hsv_is_converted_by_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HSV (which no Pillow writer can store, so the decoder is faked) reads as ``convert("RGB")``."""
    arr = np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    hsv = Image.fromarray(arr, "HSV")
    expected = np.array(hsv.convert("RGB"))
    assert not np.array_equal(expected, arr)
    (tmp_path / "h.png").write_bytes(b"")
    monkeypatch.setattr(Image, "open", lambda path: hsv.copy())
    np.testing.assert_array_equal(read_image(tmp_path / "h.png"), expected)


def test_floating_point_image_is_refused(tmp_path: Path) -> None:
    """A 32-bit float TIFF (Pillow mode "F") is refused with an error naming the file."""
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), "F").save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    with pytest.raises(ImageReadError, match=r"f\.tif: floating-point images are not supported "
                                             r"\(expected 8- or 16-bit\)"):
        read_image(tmp_path / "f.tif")
