"""Datasets over LR/HR uint8 image pairs: random aligned training patches and whole validation images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

ImagePair = tuple[np.ndarray, np.ndarray]  # (LR, HR), each H x W x 3 uint8 (in memory or memory-mapped)
SampleKey = int | tuple[int, int]  # an item index, or (index, seed) from the resumable sampler


def _to_chw(arr: np.ndarray) -> Tensor:
    """H x W x C array (possibly a read-only view or memory map) -> a contiguous C x H x W tensor that owns
    its data. numpy copies flipped or transposed views to C x H x W several times faster than to H x W x C."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def augment_pair(lr: np.ndarray, hr: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> ImagePair:
    """Apply the same flips and transpose (the 8 dihedral transforms) to an H x W x C pair."""
    if hflip:
        lr, hr = lr[:, ::-1], hr[:, ::-1]
    if vflip:
        lr, hr = lr[::-1], hr[::-1]
    if transpose:
        lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
    return lr, hr


class PatchDataset(Dataset):
    """Random aligned patches: the crop is drawn on LR coordinates and scaled to HR (BasicSR's rule).

    ``patch_size`` is the HR patch side; ``repeat`` makes one epoch visit every image ``repeat`` times
    (EDSR's long epochs over 800 images). Items are ``(lr, hr)`` uint8 C x H x W tensors: the float
    conversion happens on the training device, which moves 4x fewer bytes.
    """

    def __init__(self, pairs: Sequence[ImagePair], scale: int, patch_size: int, repeat: int = 1,
                 augment: bool = True) -> None:
        if patch_size % scale:
            raise ValueError(f"data.patch_size={patch_size} must be divisible by data.scale={scale}")
        if not pairs:
            raise ValueError("PatchDataset needs at least one image pair")
        if repeat < 1:
            raise ValueError(f"data.repeat must be >= 1, got {repeat}")
        self.pairs, self.scale, self.patch_size = pairs, scale, patch_size
        self.repeat, self.augment = repeat, augment

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def _crop(self, index: int, u: float, v: float) -> ImagePair:
        """The aligned patch of image ``index % len(pairs)`` at relative position (u, v) in [0, 1)."""
        lr, hr = self.pairs[index % len(self.pairs)]
        lp, s = self.patch_size // self.scale, self.scale
        top = int(u * (lr.shape[0] - lp + 1))
        left = int(v * (lr.shape[1] - lp + 1))
        return lr[top : top + lp, left : left + lp], hr[top * s : (top + lp) * s, left * s : (left + lp) * s]

    @staticmethod
    def _draws(items: Sequence[SampleKey]) -> tuple[list[int], list[list[float]]]:
        """Image indices and five uniform draws (crop u, v; h-flip, v-flip, transpose) per item.

        Items from :class:`~pspl_lightning.data.sampling.ResumableRandomSampler` are ``(index, seed)``
        pairs and get their draws from their own seed (the same patch whatever the worker or the resume
        point); plain integer indices use torch's global generator.
        """
        if items and isinstance(items[0], tuple):
            return [int(i) for i, _ in items], [np.random.default_rng(s).random(5).tolist() for _, s in items]
        return [int(i) for i in items], torch.rand(len(items), 5).tolist()

    def __getitem__(self, item: SampleKey) -> tuple[Tensor, Tensor]:
        (index,), ((u, v, *flips),) = self._draws([item])
        lr, hr = self._crop(index, u, v)
        if self.augment:
            lr, hr = augment_pair(lr, hr, *(f < 0.5 for f in flips))
        return _to_chw(lr), _to_chw(hr)

    def __getitems__(self, items: list[SampleKey]) -> tuple[Tensor, Tensor]:
        """A whole batch at once (the DataLoader calls this instead of ``__getitem__`` per index): the
        random numbers are drawn together and every patch is copied once, straight into the B x C x H x W
        batch (no per-sample tensors, no collate copy; torch ops are avoided here because their thread
        pool fights the DataLoader workers for cores)."""
        indices, draws = self._draws(items)
        n, lp = len(indices), self.patch_size // self.scale
        lr_out = np.empty((n, 3, lp, lp), dtype=np.uint8)
        hr_out = np.empty((n, 3, self.patch_size, self.patch_size), dtype=np.uint8)
        for i, (index, (u, v, *flips)) in enumerate(zip(indices, draws, strict=True)):
            lr, hr = self._crop(index, u, v)
            if self.augment:
                lr, hr = augment_pair(lr, hr, *(f < 0.5 for f in flips))
            lr_out[i], hr_out[i] = lr.transpose(2, 0, 1), hr.transpose(2, 0, 1)
        return torch.from_numpy(lr_out), torch.from_numpy(hr_out)


def collate_patches(batch: Any) -> Any:
    """Collate for :class:`PatchDataset`: batches from ``__getitems__`` arrive stacked already."""
    if isinstance(batch, tuple) and all(isinstance(t, Tensor) for t in batch):
        return batch
    return default_collate(batch)


class PairDataset(Dataset):
    """Whole LR/HR images in order, for validation and evaluation (batch size 1: sizes differ)."""

    def __init__(self, pairs: Sequence[ImagePair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        """``(lr, hr)``; for a padding index (< 0) ``(lr, hr, False)`` of image 0, not to be scored."""
        lr, hr = self.pairs[max(index, 0)]
        return (_to_chw(lr), _to_chw(hr)) if index >= 0 else (_to_chw(lr), _to_chw(hr), torch.tensor(False))
