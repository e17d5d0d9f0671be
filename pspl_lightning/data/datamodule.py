"""LightningDataModules: random training patches and whole-image validation sets over LR/HR pairs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from pspl_lightning.data.datasets import ImagePair, PairDataset, PatchDataset
from pspl_lightning.data.pairs import PathPair, load_pairs
from pspl_lightning.data.sample import build_sample_set, sample_pairs


class PairedSRDataModule(L.LightningDataModule):
    """Base DataModule: subclasses say which (LR, HR) files train and which validate.

    Training serves ``len(train) * repeat`` random patches per epoch; each validation set is its own
    dataloader of whole images (batch size 1), reported under ``val/<set>/...``.
    """

    def __init__(self, scale: int = 2, patch_size: int = 96, batch_size: int = 16, repeat: int = 1,
                 augment: bool = True, num_workers: int = 0, pin_memory: bool | None = None,
                 persistent_workers: bool = True) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"data.scale must be 2, 3 or 4, got {scale}")
        if patch_size % scale:
            raise ValueError(f"data.patch_size={patch_size} must be divisible by data.scale={scale}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.scale, self.patch_size, self.batch_size = scale, patch_size, batch_size
        self.repeat, self.augment, self.num_workers = repeat, augment, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.train_pairs: list[ImagePair] = []
        self.val_pairs: dict[str, list[ImagePair]] = {}

    def train_files(self) -> list[PathPair]:
        raise NotImplementedError

    def val_files(self) -> dict[str, list[PathPair]]:
        raise NotImplementedError

    @property
    def val_set_names(self) -> list[str]:
        return list(self.val_files())

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and not self.train_pairs:
            self.train_pairs = load_pairs(self.train_files(), self.scale, self.patch_size // self.scale)
        if stage in (None, "fit", "validate") and not self.val_pairs:
            self.val_pairs = {name: load_pairs(files, self.scale) for name, files in self.val_files().items()}

    def _pin(self) -> bool:
        return torch.cuda.is_available() if self.pin_memory is None else self.pin_memory

    def train_dataloader(self) -> DataLoader:
        dataset = PatchDataset(self.train_pairs, self.scale, self.patch_size, self.repeat, self.augment)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, pin_memory=self._pin(),
                          persistent_workers=self.persistent_workers and self.num_workers > 0)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(PairDataset(pairs), batch_size=1, shuffle=False, num_workers=0, pin_memory=self._pin())
                for pairs in self.val_pairs.values()]


class SampleDataModule(PairedSRDataModule):
    """The scikit-image sample set (built on first use under ``root``): 6 training, 2 validation photos."""

    def __init__(self, root: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)

    def prepare_data(self) -> None:
        build_sample_set(self.root, self.scale)

    def train_files(self) -> list[PathPair]:
        return sample_pairs(self.root, "train", self.scale)

    def val_files(self) -> dict[str, list[PathPair]]:
        return {"sample": sample_pairs(self.root, "val", self.scale)}
