"""Image reading and writing: every image becomes 8-bit RGB (H x W x 3 uint8) or a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pspl_lightning.atomic import atomic_path
from pspl_lightning.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageReadError(DataError):
    """An image file that cannot be decoded; the message names the file."""


def to_rgb8(arr: np.ndarray, source: str = "image") -> np.ndarray:
    """Convert grayscale, gray+alpha, RGBA and 16-bit arrays to H x W x 3 uint8 (alpha is dropped)."""
    if arr.dtype == np.uint16 or (arr.dtype.kind in "iu" and arr.max(initial=0) > 255):
        arr = np.floor(arr.astype(np.float64) / 257.0 + 0.5).clip(0, 255).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "f":
        raise ImageReadError(f"{source}: floating-point images are not supported (expected 8- or 16-bit)")
    arr = arr.astype(np.uint8, copy=False)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{source}: expected a gray, gray+alpha, RGB or RGBA image, "
                             f"got shape {arr.shape}")
    if arr.shape[2] in (1, 2):
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def read_image(path: str | Path) -> np.ndarray:
    """Decode ``path`` to H x W x 3 uint8 RGB; 16-bit, gray, palette and alpha images are converted."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode == "I" or im.mode.startswith("I;16"):
                return to_rgb8(np.asarray(im).astype(np.uint16), str(path))
            arr = np.array(im)  # a writable copy (np.asarray of a PIL image is read-only)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageReadError(
            f"{path}: cannot decode image ({exc}); is it truncated or not an image?"
        ) from exc
    return to_rgb8(arr, str(path))


def write_png(path: str | Path, img: np.ndarray) -> None:
    """Write an H x W x 3 uint8 array as PNG, atomically (temporary file, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (and, with ``recursive``, in its subfolders, as LSDIR nests them), sorted
    by path."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def image_name(path: Path, folder: Path) -> str:
    """The name of an image of ``folder``: its path relative to the folder, without the extension
    (``0001000/0000001`` for LSDIR's ``0001000/0000001.png``)."""
    return Path(path).relative_to(folder).with_suffix("").as_posix()


def unique_names(files: list[Path], folder: Path, key: str) -> list[str]:
    """The name of each file (:func:`image_name`); a DataError naming ``key`` and both files when two share
    one (``dup.png`` and ``dup.jpg`` would be one image in the cache's, the stream's and the LR's eyes)."""
    seen: dict[str, Path] = {}
    names = []
    for f in files:
        name = image_name(f, folder)
        if name in seen:
            raise DataError(f"{key}={folder}: {seen[name].name} and {f.name} share the name {name!r} (the "
                            f"extension is not part of an image's name); rename or remove one of them")
        seen[name] = f
        names.append(name)
    return names
