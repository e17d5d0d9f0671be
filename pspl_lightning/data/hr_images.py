"""HR-only images for degradations made on the device: decoded (or memory-mapped from the decoded cache),
cropped to a multiple of the scale, checked against the patch size, and keyed by name for validation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pspl_lightning.data.cache import CacheItem, DecodedCache, MappedImages
from pspl_lightning.data.io import read_image
from pspl_lightning.data.pairs import TooSmallError, skip_too_small
from pspl_lightning.degradations.base import name_key
from pspl_lightning.errors import DataError


def modcropped_size(shape: Sequence[int], scale: int, path: Path, min_size: int = 0) -> tuple[int, int]:
    """(H, W) cropped down to multiples of ``scale``; a :class:`TooSmallError` naming ``path`` when its
    shorter side is below ``min_size`` (the HR patch), a DataError when it is below one LR pixel."""
    h, w = (int(shape[0]) // scale) * scale, (int(shape[1]) // scale) * scale
    if min(h, w) < scale:
        raise DataError(f"{path} is {shape[1]}x{shape[0]} (WxH): smaller than one LR pixel at scale {scale}")
    if min(h, w) < min_size:
        raise TooSmallError(f"{path} is {shape[1]}x{shape[0]} (WxH): smaller than the HR patch of {min_size} "
                            f"pixels (data.patch_size) at scale {scale}; lower data.patch_size or remove it",
                            f"{path} ({shape[1]}x{shape[0]}, WxH): shorter side below the HR patch of "
                            f"{min_size} pixels")
    return h, w


def load_hr_images(paths: Sequence[Path], scale: int, min_size: int = 0) -> list[np.ndarray]:
    """Decode every HR image into memory, cropped to a multiple of ``scale``; with ``min_size`` (training)
    images smaller than it are skipped (one line each and a count)."""

    def load(path: Path) -> np.ndarray:
        img = read_image(path)
        h, w = modcropped_size(img.shape, scale, Path(path), min_size)
        return img[:h, :w]

    return skip_too_small(paths, load, f"the HR patch of {min_size} pixels")


def mapped_hr_images(paths: Sequence[Path], scale: int, cache: DecodedCache, min_size: int = 0,
                     workers: int | None = None, progress: bool = True,
                     ensured: bool = False) -> MappedImages:
    """Memory-mapped HR images from ``cache`` (built first where missing or stale, unless ``ensured`` by
    this cache object just before), checked from the array headers alone."""
    items = [CacheItem(Path(p)) for p in paths]
    if not ensured:
        cache.ensure(items, workers=workers, progress=progress)
    entries = skip_too_small(items, lambda it: (cache.array_path(it), modcropped_size(
        cache.shape(it), scale, it.source, min_size)), f"the HR patch of {min_size} pixels")
    return MappedImages(entries)


def image_keys(paths: Sequence[Path]) -> list[int]:
    """The degradation key of each validation image: a hash of its file name (stem)."""
    return [name_key(Path(p).stem) for p in paths]
