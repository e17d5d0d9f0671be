"""The DataModule under a degradation: HR-only loaders, keys, the transfer hooks, and bicubic unchanged."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from pspl_lightning.data import DIV2KDataModule, SampleDataModule
from pspl_lightning.data.datasets import HRBatch
from pspl_lightning.data.degrade import degrade_image
from pspl_lightning.data.io import read_image
from pspl_lightning.data.synthetic import make_div2k_folder
from pspl_lightning.degradations import Bicubic, BlurDown, NoisyBicubic, Realistic
from pspl_lightning.errors import DataError


def _dm(root: Path, degradation=None, **kwargs) -> SampleDataModule:
    args = {"scale": 2, "patch_size": 64, "batch_size": 4, "repeat": 2, "seed": 42, **kwargs}
    dm = SampleDataModule(root=str(root), degradation=degradation, **args)
    dm.prepare_data()
    dm.setup()
    return dm


def _hooks(dm, batch):
    return dm.on_after_batch_transfer(dm.on_before_batch_transfer(batch, 0), 0)


def test_default_bicubic_batches_are_unchanged(sample_root: Path) -> None:
    """The first 3 training batches and the validation pairs of the sample set (x2), hashed before
    degradations existed (commit 437e9d5): degradation=bicubic serves the very same bytes."""
    dm = _dm(sample_root, partial(Bicubic))
    assert not dm.lr_on_device
    h = hashlib.sha256()
    it = iter(dm.train_dataloader())
    for _ in range(3):
        batch = _hooks(dm, next(it))
        for t in batch:
            h.update(t.numpy().tobytes())
    for loader in dm.val_dataloader():
        for lr, hr in loader:
            h.update(_hooks(dm, (lr, hr))[0].numpy().tobytes())
            h.update(hr.numpy().tobytes())
    assert h.hexdigest() == "c3b2a2a0ed90dd9f12aaf9415742bba56bd2655cf3d15b388b0d537fb7bd7847"


def test_hr_only_batches_crop_like_the_paired_loader(sample_root: Path) -> None:
    """Same seeds, same crops and flips: the HR patches equal the bicubic loader's; the keys are the
    sampler's per-sample seeds."""
    paired, hr_only = _dm(sample_root), _dm(sample_root, partial(BlurDown))
    assert hr_only.lr_on_device
    (lr_a, hr_a), batch = next(iter(paired.train_dataloader())), next(iter(hr_only.train_dataloader()))
    assert isinstance(batch, HRBatch) and torch.equal(batch.hr, hr_a)
    sampler_seeds = [seed for _, seed in list(hr_only.train_dataloader().sampler)[:4]]
    assert batch.key.tolist() == sampler_seeds
    lr, hr = _hooks(hr_only, batch)
    assert torch.equal(hr, hr_a) and lr.shape == lr_a.shape and lr.dtype == torch.uint8
    assert torch.equal(lr, BlurDown(2)(hr, batch.key))


def test_any_number_of_workers_gives_the_same_batches(sample_root: Path) -> None:
    batches = []
    for workers in (0, 2):
        dm = _dm(sample_root, partial(NoisyBicubic), num_workers=workers, persistent_workers=False)
        it = iter(dm.train_dataloader())
        batches.append([_hooks(dm, next(it)) for _ in range(3)])
    for (lr0, hr0), (lr2, hr2) in zip(*batches, strict=True):
        assert torch.equal(hr0, hr2) and torch.equal(lr0, lr2)


@pytest.mark.parametrize("make", [partial(BlurDown), partial(NoisyBicubic), partial(Realistic)])
def test_validation_images_are_fixed_per_image_and_equal_pspl_data_degrade(sample_root: Path, make) -> None:
    dm = _dm(sample_root, make)
    (loader,) = dm.val_dataloader()
    names = ["chelsea", "coffee"]  # the sample set's validation images, in order
    for name, batch in zip(names, loader, strict=True):
        lr, hr = _hooks(dm, batch)
        again, _ = _hooks(dm, batch)
        assert torch.equal(lr, again)
        expect = degrade_image(dm.degradation, read_image(sample_root / "val" / "HR" / f"{name}.png"), name)
        np.testing.assert_array_equal(lr[0].permute(1, 2, 0).numpy(), expect)


def test_validation_padding_is_degraded_but_marked(sample_root: Path) -> None:
    dm = _dm(sample_root, partial(BlurDown))
    dm.trainer = None
    item = dm.val_dataloader()[0].dataset[-1]
    assert item.scored is False
    batch = _hooks(dm, HRBatch(item.hr[None], item.key[None], torch.tensor([False])))
    assert len(batch) == 3 and not bool(batch[2])


def test_hr_only_cache_and_too_small_images(tmp_path: Path) -> None:
    root = make_div2k_folder(tmp_path / "DIV2K", range(1, 3), range(801, 802), size=(40, 52), with_lr=False)
    cache = tmp_path / "cache"
    dm = DIV2KDataModule(root=str(root), train_range=[1, 2], val_range=[801, 801], scale=3, patch_size=36,
                         batch_size=2, repeat=1, cache_dir=str(cache), progress=False,
                         degradation=partial(BlurDown))
    dm.prepare_data()
    dm.setup()
    assert len(list(cache.glob("*.npy"))) == 3  # HR only: no bicubic LR arrays
    assert dm.train_pairs[0].shape == (39, 51, 3)  # cropped to a multiple of 3
    lr, hr = _hooks(dm, next(iter(dm.train_dataloader())))
    assert lr.shape == (2, 3, 12, 12) and hr.shape == (2, 3, 36, 36)
    big = DIV2KDataModule(root=str(root), train_range=[1, 2], val_range=[801, 801], scale=3, patch_size=48,
                          batch_size=2, cache_dir=None, degradation=partial(BlurDown))
    with pytest.raises(DataError, match=r"0001.png is 52x40 \(WxH\): smaller than the HR patch of 48"):
        big.setup("fit")


def test_a_validation_image_keeps_its_degradation_when_the_set_changes(tmp_path: Path) -> None:
    from pspl_lightning.data import FolderDataModule
    from pspl_lightning.data.io import write_png

    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_png(tmp_path / "train" / f"{name}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    lrs = []
    for names in (["b", "c"], ["a", "b", "c"]):
        val = tmp_path / f"val{len(names)}"
        for name in names:
            write_png(val / f"{name}.png", read_image(tmp_path / "train" / f"{name}.png"))
        dm = FolderDataModule(hr_dir=str(tmp_path / "train"), val_hr_dir=str(val), scale=2, patch_size=32,
                              batch_size=2, degradation=partial(NoisyBicubic))
        dm.setup("validate")
        lrs.append({n: _hooks(dm, b)[0] for n, b in zip(names, dm.val_dataloader()[0], strict=True)})
    assert torch.equal(lrs[0]["b"], lrs[1]["b"]) and torch.equal(lrs[0]["c"], lrs[1]["c"])  # keyed by name
