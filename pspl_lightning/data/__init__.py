"""Data: image I/O, decoded cache, patch datasets, DataModules and the built-in sample set.

Names are imported on first use, so that tools needing only image I/O (``pspl-eval``,
``pspl-upscale``) do not pay for importing Lightning through the DataModules.
"""

from __future__ import annotations

import importlib
from typing import Any

from pspl_lightning.data.io import read_image

_LAZY = {
    "DIV2KDataModule": "datamodule",
    "FolderDataModule": "datamodule",
    "PairedSRDataModule": "datamodule",
    "SampleDataModule": "datamodule",
    "DecodedCache": "cache",
    "PairDataset": "datasets",
    "PatchDataset": "datasets",
}

__all__ = ["DIV2KDataModule", "DecodedCache", "FolderDataModule", "PairDataset", "PairedSRDataModule",
           "PatchDataset", "SampleDataModule", "read_image"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
