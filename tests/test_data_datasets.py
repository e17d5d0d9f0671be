"""Patch datasets: aligned crops, the 8 flips/transposes applied alike to LR and HR, whole-batch crops,
DataLoader workers over memory maps, DDP sharding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pspl_lightning.data.cache import DecodedCache
from pspl_lightning.data.datasets import PairDataset, PatchDataset, collate_patches
from pspl_lightning.data.io import write_png
from pspl_lightning.data.pairs import mapped_pairs


def _nearest_pair(seed: int, h: int, w: int, s: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """An LR image and its nearest-neighbour HR: every aligned, equally augmented patch pair stays so."""
    lr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return lr, lr.repeat(s, axis=0).repeat(s, axis=1)


def _up(lr: torch.Tensor, s: int = 2) -> torch.Tensor:
    return lr.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def test_patches_are_aligned_and_augmented_alike() -> None:
    pairs = [_nearest_pair(i, 30 + i, 40) for i in range(3)]
    ds = PatchDataset(pairs, scale=2, patch_size=16, repeat=4)
    assert len(ds) == 12
    for i in range(40):
        lr, hr = ds[i % len(ds)]
        assert lr.shape == (3, 8, 8) and hr.shape == (3, 16, 16) and lr.dtype == torch.uint8
        assert torch.equal(_up(lr), hr)
    lr, hr = ds.__getitems__(list(range(12)))
    assert lr.shape == (12, 3, 8, 8) and hr.shape == (12, 3, 16, 16) and lr.is_contiguous()
    assert torch.equal(_up(lr), hr)


def test_patch_comes_from_the_indexed_image() -> None:
    pairs = [(np.full((10, 10, 3), i, np.uint8), np.full((20, 20, 3), i, np.uint8)) for i in range(3)]
    ds = PatchDataset(pairs, scale=2, patch_size=8, repeat=2)
    lr, hr = ds.__getitems__([0, 1, 2, 3, 4, 5])
    assert lr[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2] and hr[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2]


def test_all_eight_dihedral_transforms_occur() -> None:
    lr, hr = _nearest_pair(7, 6, 6)  # LR patch = whole image: only the augmentation varies
    ds = PatchDataset([(lr, hr)], scale=2, patch_size=12)
    base = torch.from_numpy(lr).permute(2, 0, 1)
    expected = {tuple(t.flatten().tolist()) for k in range(4)
                for t in (torch.rot90(base, k, (1, 2)), torch.rot90(base, k, (1, 2)).flip(2))}
    assert len(expected) == 8
    torch.manual_seed(0)
    seen = {tuple(ds[0][0].flatten().tolist()) for _ in range(200)}
    batch = ds.__getitems__([0] * 200)[0]
    seen_batch = {tuple(b.flatten().tolist()) for b in batch}
    assert seen == expected and seen_batch == expected
    plain = PatchDataset([(lr, hr)], scale=2, patch_size=12, augment=False)
    assert torch.equal(plain[0][0], base)


def test_crop_positions_cover_the_image() -> None:
    """Channel 0 holds the row, channel 1 the column: every top-left LR position occurs, HR follows x2."""
    yy, xx = np.mgrid[:20, :30]
    lr = np.stack([yy, xx, yy], -1).astype(np.uint8)
    ds = PatchDataset([(lr, lr.repeat(2, 0).repeat(2, 1))], scale=2, patch_size=4, augment=False)
    torch.manual_seed(0)
    lrs, hrs = ds.__getitems__([0] * 20000)
    corners = {(int(p[0, 0, 0]), int(p[1, 0, 0])) for p in lrs}
    assert corners == {(y, x) for y in range(19) for x in range(29)}
    assert torch.equal(_up(lrs), hrs)


def test_bad_patch_dataset_arguments() -> None:
    pair = _nearest_pair(0, 8, 8)
    with pytest.raises(ValueError, match="divisible by data.scale"):
        PatchDataset([pair], scale=3, patch_size=16)
    with pytest.raises(ValueError, match="at least one image pair"):
        PatchDataset([], scale=2, patch_size=16)
    with pytest.raises(ValueError, match="data.repeat must be >= 1"):
        PatchDataset([pair], scale=2, patch_size=16, repeat=0)


def test_pair_dataset_gives_whole_images_chw() -> None:
    lr, hr = _nearest_pair(1, 5, 7)
    out_lr, out_hr = PairDataset([(lr, hr)])[0]
    assert out_hr.shape == (3, 10, 14) and out_hr.is_contiguous()
    assert torch.equal(out_hr, torch.from_numpy(hr).permute(2, 0, 1))


@pytest.fixture
def mapped(tmp_path: Path):
    files = []
    for i in range(4):
        lr, hr = _nearest_pair(i, 40, 50)
        write_png(tmp_path / "lr" / f"{i}.png", lr)
        write_png(tmp_path / "hr" / f"{i}.png", hr)
        files.append((tmp_path / "lr" / f"{i}.png", tmp_path / "hr" / f"{i}.png"))
    return mapped_pairs(files, 2, DecodedCache(tmp_path / "cache"), progress=False)


def test_workers_stream_from_memory_maps(mapped) -> None:
    ds = PatchDataset(mapped, scale=2, patch_size=16, repeat=8)
    loader = DataLoader(ds, batch_size=8, shuffle=True, drop_last=True, num_workers=2,
                        collate_fn=collate_patches, persistent_workers=True)
    batches = list(loader)
    assert len(batches) == 4 and mapped._maps is None  # the main process never mapped anything
    for lr, hr in batches:
        assert lr.shape == (8, 3, 8, 8) and torch.equal(_up(lr), hr)
