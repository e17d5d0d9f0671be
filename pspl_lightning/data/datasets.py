"""Datasets over LR/HR uint8 image pairs: random aligned training patches and whole validation images; and
their HR-only twins for degradations made on the device (items carry a key that seeds the degradation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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


def augment_image(img: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    """Flip and/or transpose an H x W x C array (the 8 dihedral transforms), as views."""
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    return img.transpose(1, 0, 2) if transpose else img


def augment_pair(lr: np.ndarray, hr: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> ImagePair:
    """Apply the same flips and transpose (the 8 dihedral transforms) to an H x W x C pair."""
    return augment_image(lr, hflip, vflip, transpose), augment_image(hr, hflip, vflip, transpose)


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


class HRBatch(NamedTuple):
    """HR images (uint8, B x 3 x H x W) and one int64 key per image, from which the DataModule makes the LR
    images on the device; ``scored`` is False for a validation padding entry (run, not scored); ``draws``
    are the degradation's random numbers when the loader drew them already (in its workers)."""

    hr: Tensor
    key: Tensor
    scored: bool | Tensor = True
    draws: dict[str, Any] | None = None



class HRPatchDataset(PatchDataset):
    """HR-only random patches for a degradation made on the device: for the same sample seeds, the same
    crops and flips as :class:`PatchDataset` (the crop is drawn on the LR grid ``H // scale`` and scaled).

    ``images`` are H x W x 3 uint8 arrays (multiples of the scale). Items are :class:`HRBatch`; the key of a
    sample is its seed from the resumable sampler (a plain index gets one from torch's global generator).
    ``draw(keys, size)`` (a degradation's) runs on each whole batch here, i.e. in the DataLoader workers,
    in parallel and ahead of the device; its result is a function of the keys alone.
    """

    def __init__(self, images: Sequence[np.ndarray], scale: int, patch_size: int, repeat: int = 1,
                 augment: bool = True, draw: Callable[[Tensor, tuple[int, int]], dict[str, Any]] | None = None
                 ) -> None:
        super().__init__(images, scale, patch_size, repeat, augment)  # (checks; ``pairs`` holds the images)
        self.images, self.draw = images, draw

    def _crop(self, index: int, u: float, v: float) -> tuple[None, np.ndarray]:  # type: ignore[override]
        hr = self.images[index % len(self.images)]
        lp, s = self.patch_size // self.scale, self.scale
        top = int(u * (hr.shape[0] // s - lp + 1))
        left = int(v * (hr.shape[1] // s - lp + 1))
        return None, hr[top * s : (top + lp) * s, left * s : (left + lp) * s]

    @staticmethod
    def _keys(items: Sequence[SampleKey]) -> Tensor:
        if items and isinstance(items[0], tuple):
            return torch.tensor([int(seed) for _, seed in items], dtype=torch.int64)
        return torch.randint(0, 2**62, (len(items),), dtype=torch.int64)

    def __getitem__(self, item: SampleKey) -> HRBatch:  # type: ignore[override]
        batch = self.__getitems__([item])
        return HRBatch(batch.hr[0], batch.key[0])

    def __getitems__(self, items: list[SampleKey]) -> HRBatch:  # type: ignore[override]
        """A whole batch at once, copied straight into the B x C x H x W array (as PatchDataset does)."""
        indices, draws = self._draws(items)
        keys = self._keys(items)
        out = np.empty((len(indices), 3, self.patch_size, self.patch_size), dtype=np.uint8)
        for i, (index, (u, v, *flips)) in enumerate(zip(indices, draws, strict=True)):
            _, hr = self._crop(index, u, v)
            if self.augment:
                hr = augment_image(hr, *(f < 0.5 for f in flips))
            out[i] = hr.transpose(2, 0, 1)
        size = (self.patch_size, self.patch_size)
        return HRBatch(torch.from_numpy(out), keys, True, self.draw(keys, size) if self.draw else None)


def collate_patches(batch: Any) -> Any:
    """Collate for :class:`PatchDataset` (batches from ``__getitems__`` arrive stacked already) and for
    single :class:`HRBatch` items (stacked, without draws)."""
    if isinstance(batch, HRBatch) or (isinstance(batch, tuple) and all(isinstance(t, Tensor) for t in batch)):
        return batch
    if isinstance(batch, list) and batch and isinstance(batch[0], HRBatch):
        return HRBatch(torch.stack([b.hr for b in batch]), torch.stack([b.key for b in batch]),
                       torch.tensor([bool(b.scored) for b in batch]))
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


class HRDataset(Dataset):
    """Whole HR images with fixed keys, in order, for validation under a degradation made on the device."""

    def __init__(self, images: Sequence[np.ndarray], keys: Sequence[int]) -> None:
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images but {len(keys)} keys")
        self.images, self.keys = images, list(keys)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> HRBatch:
        """The image and its key; a padding index (< 0) gives image 0, marked not to be scored."""
        i = max(index, 0)
        return HRBatch(_to_chw(self.images[i]), torch.tensor(self.keys[i], dtype=torch.int64), index >= 0)
