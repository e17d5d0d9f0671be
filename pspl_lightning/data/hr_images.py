"""HR-only images for degradations made on the device: decoded (or memory-mapped from the decoded cache),
cropped to a multiple of the scale, checked against the patch size, and keyed by name for validation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pspl_lightning.data.cache import CacheItem, DecodedCache, MappedImages
from pspl_lightning.data.io import read_image
from pspl_lightning.degradations.base import name_key
from pspl_lightning.errors import DataError


def modcropped_size(shape: Sequence[int], scale: int, path: Path, min_size: int = 0) -> tuple[int, int]:
    """(H, W) cropped down to multiples of ``scale``; a DataError naming ``path`` when it is smaller than
    ``min_size`` (the HR patch) or than one LR pixel."""
    h, w = (int(shape[0]) // scale) * scale, (int(shape[1]) // scale) * scale
    if min(h, w) < max(min_size, scale):
        raise DataError(f"{path} is {shape[1]}x{shape[0]} (WxH): smaller than the HR patch of {min_size} "
                        f"pixels (data.patch_size) at scale {scale}; lower data.patch_size or remove it")
    return h, w


def load_hr_images(paths: Sequence[Path], scale: int, min_size: int = 0) -> list[np.ndarray]:
    """Decode every HR image into memory, cropped to a multiple of ``scale``."""
    images = []
    for path in paths:
        img = read_image(path)
        h, w = modcropped_size(img.shape, scale, Path(path), min_size)
        images.append(img[:h, :w])
    return images


def mapped_hr_images(paths: Sequence[Path], scale: int, cache: DecodedCache, min_size: int = 0,
                     workers: int | None = None, progress: bool = True) -> MappedImages:
    """Memory-mapped HR images from ``cache`` (built first where missing or stale), checked from the array
    headers alone."""
    items = [CacheItem(Path(p)) for p in paths]
    cache.ensure(items, workers=workers, progress=progress)
    entries = [(cache.array_path(it), modcropped_size(cache.shape(it), scale, it.source, min_size))
               for it in items]
    return MappedImages(entries)


def image_keys(paths: Sequence[Path]) -> list[int]:
    """The degradation key of each validation image: a hash of its file name (stem)."""
    return [name_key(Path(p).stem) for p in paths]
