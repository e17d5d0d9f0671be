"""Data: image I/O, MATLAB bicubic, patch datasets, DataModules and the built-in sample set."""

from pspl_lightning.data.datamodule import PairedSRDataModule, SampleDataModule
from pspl_lightning.data.datasets import PairDataset, PatchDataset
from pspl_lightning.data.imresize import imresize
from pspl_lightning.data.io import read_image

__all__ = ["PairDataset", "PairedSRDataModule", "PatchDataset", "SampleDataModule", "imresize", "read_image"]
