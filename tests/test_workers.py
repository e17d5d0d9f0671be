"""The training stream does not depend on the number of loader workers: 0, 1 and 2 give identical batches."""

from __future__ import annotations

from pathlib import Path

import torch

from pspl_lightning.data import SampleDataModule


def _epoch(sample_root: Path, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dm = SampleDataModule(root=str(sample_root), scale=2, patch_size=64, batch_size=4, repeat=2, seed=42,
                          num_workers=workers, persistent_workers=False, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    return [(lr.clone(), hr.clone()) for lr, hr in dm.train_dataloader()]


def test_zero_one_and_two_workers_give_identical_batches(sample_root: Path) -> None:
    epochs = {workers: _epoch(sample_root, workers) for workers in (0, 1, 2)}
    assert len(epochs[0]) == 3  # 6 images x repeat 2 / batch 4
    lr0, hr0 = epochs[0][0]
    assert lr0.shape == (4, 3, 32, 32) and hr0.shape == (4, 3, 64, 64) and hr0.dtype == torch.uint8
    assert not torch.equal(epochs[0][0][1], epochs[0][1][1])  # (batches differ from each other)
    for workers in (1, 2):
        assert len(epochs[workers]) == 3
        for (lr, hr), (lr_ref, hr_ref) in zip(epochs[workers], epochs[0], strict=True):
            assert torch.equal(lr, lr_ref) and torch.equal(hr, hr_ref), f"{workers} workers"
