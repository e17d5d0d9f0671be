"""LR/HR file pairs -> aligned uint8 arrays (in memory or memory-mapped from the decoded cache), with the
checks that name the offending files. An LR file of ``None`` means: make it from HR with MATLAB bicubic."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from pspl_lightning.data.cache import CacheItem, DecodedCache, MappedPairs
from pspl_lightning.data.datasets import ImagePair
from pspl_lightning.data.io import read_image
from pspl_lightning.errors import DataError
from pspl_lightning.imresize import make_lr

log = logging.getLogger(__name__)

PathPair = tuple[Path | None, Path]  # (LR file or None, HR file)
T = TypeVar("T")
R = TypeVar("R")


class TooSmallError(DataError):
    """An image whose shorter side is below the training patch; ``short`` says so in a few words."""

    def __init__(self, message: str, short: str) -> None:
        super().__init__(message)
        self.short = short


def skip_too_small(candidates: Sequence[T], load: Callable[[T], R], patch: str) -> list[R]:
    """``load`` of every candidate, leaving out those it finds smaller than the ``patch`` (a
    :class:`TooSmallError`): one line each, then the count; a DataError when none is left."""
    kept, skipped = [], []
    for candidate in candidates:
        try:
            kept.append(load(candidate))
        except TooSmallError as exc:
            skipped.append(exc)
    if skipped and not kept:
        raise DataError(f"all {len(skipped)} training images are smaller than {patch}, e.g. {skipped[0]}")
    for exc in skipped:
        log.warning("skipped %s", exc.short)
    if skipped:
        log.warning("skipped %d of %d training images smaller than %s", len(skipped), len(candidates), patch)
    return kept


def _lr_name(lr_path: Path | None, hr_path: Path, scale: int) -> str:
    return str(lr_path) if lr_path is not None else f"the x{scale} MATLAB-bicubic LR of {hr_path}"


def check_pair_shape(lr_shape: tuple[int, ...], hr_shape: tuple[int, ...], scale: int, lr_path: Path | None,
                     hr_path: Path, min_lr_size: int = 0) -> None:
    """Raise unless HR is ``scale x`` LR (up to ``scale - 1`` extra pixels) and LR holds a patch of
    ``min_lr_size`` pixels."""
    lh, lw = lr_shape[:2]
    hh, hw = hr_shape[:2]
    if not (lh * scale <= hh < (lh + 1) * scale and lw * scale <= hw < (lw + 1) * scale):
        raise DataError(
            f"LR/HR sizes disagree with scale {scale}: {lr_path} is {lw}x{lh} (WxH), so {hr_path} should be "
            f"{lw * scale}x{lh * scale} (up to {scale - 1} extra pixels), but it is {hw}x{hh}"
        )
    if min(lh, lw) < min_lr_size:
        name = _lr_name(lr_path, hr_path, scale)
        raise TooSmallError(
            f"{name} is {lw}x{lh} (WxH): smaller than the LR patch of {min_lr_size} pixels "
            f"(data.patch_size / data.scale); lower data.patch_size or remove the image",
            f"{hr_path} ({hw}x{hh}, WxH): its x{scale} LR is below the LR patch of {min_lr_size} pixels")


def align_pair(lr: np.ndarray, hr: np.ndarray, scale: int, lr_path: Path | None, hr_path: Path) -> ImagePair:
    """Crop HR to ``scale x`` the LR size (the benchmark "modcrop"); any other mismatch is an error."""
    check_pair_shape(lr.shape, hr.shape, scale, lr_path, hr_path)
    lh, lw = lr.shape[:2]
    return lr, hr[: lh * scale, : lw * scale]


def load_pair(lr_path: Path | None, hr_path: Path, scale: int, min_lr_size: int = 0) -> ImagePair:
    """Decode one pair, aligned; the LR image is made with MATLAB bicubic when ``lr_path`` is None."""
    hr = read_image(hr_path)
    lr = make_lr(hr, scale) if lr_path is None else read_image(lr_path)
    check_pair_shape(lr.shape, hr.shape, scale, lr_path, hr_path, min_lr_size)
    return align_pair(lr, hr, scale, lr_path, hr_path)


def load_pairs(paths: Sequence[PathPair], scale: int, min_lr_size: int = 0) -> list[ImagePair]:
    """Decode every pair into memory, aligned; with ``min_lr_size`` (training) pairs whose LR is smaller
    than a patch are skipped (one line each and a count)."""
    return skip_too_small(paths, lambda p: load_pair(p[0], p[1], scale, min_lr_size),
                          f"the LR patch of {min_lr_size} pixels")


def cache_items(paths: Sequence[PathPair], scale: int) -> list[CacheItem]:
    """The cache entries that a list of pairs needs (an LR made from HR is its own entry)."""
    items = []
    for lr_path, hr_path in paths:
        items.append(CacheItem(Path(hr_path)))
        items.append(CacheItem(Path(hr_path), scale) if lr_path is None else CacheItem(Path(lr_path)))
    return items


def mapped_pairs(paths: Sequence[PathPair], scale: int, cache: DecodedCache, min_lr_size: int = 0,
                 workers: int | None = None, progress: bool = True, ensured: bool = False) -> MappedPairs:
    """Memory-mapped aligned pairs from ``cache`` (built first where missing or stale, unless ``ensured``
    by this cache object just before), checked like :func:`load_pairs` from the array headers alone."""
    items = cache_items(paths, scale)
    if not ensured:
        cache.ensure(items, workers=workers, progress=progress)

    def entry(i: int) -> tuple[Path, Path, tuple[int, int]]:
        (lr_path, hr_path), hr_item, lr_item = paths[i], items[2 * i], items[2 * i + 1]
        lr_shape, hr_shape = cache.shape(lr_item), cache.shape(hr_item)
        check_pair_shape(lr_shape, hr_shape, scale, lr_path, hr_path, min_lr_size)
        return cache.array_path(lr_item), cache.array_path(hr_item), lr_shape[:2]

    entries = skip_too_small(range(len(paths)), entry, f"the LR patch of {min_lr_size} pixels")
    return MappedPairs(entries, scale)
