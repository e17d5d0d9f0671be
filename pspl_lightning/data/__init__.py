"""Data: image I/O, MATLAB bicubic, decoded cache, patch datasets, DataModules and the built-in sample set."""

from pspl_lightning.data.cache import DecodedCache
from pspl_lightning.data.datamodule import (
    DIV2KDataModule,
    FolderDataModule,
    PairedSRDataModule,
    SampleDataModule,
)
from pspl_lightning.data.datasets import PairDataset, PatchDataset
from pspl_lightning.data.imresize import imresize
from pspl_lightning.data.io import read_image

__all__ = [
    "DIV2KDataModule",
    "DecodedCache",
    "FolderDataModule",
    "PairDataset",
    "PairedSRDataModule",
    "PatchDataset",
    "SampleDataModule",
    "imresize",
    "read_image",
]
