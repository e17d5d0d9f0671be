"""LightningDataModules: random training patches and whole-image validation sets over LR/HR pairs.
Which files each trains on is its layout (:mod:`~pspl_lightning.data.layouts`, ``sample``, ``benchmarks``).

Every DataModule trains on its own files and validates on ``val_sets``, a list of names: the module's own
validation set (``sample``, ``div2k_val``, ``val``) or benchmark folders under ``benchmark_root``
(``set5``, ``set14``, ``b100``, ``urban100``, ``manga109``, ...). With ``cache_dir`` set, images are decoded
once into that folder (in ``prepare_data``: one process per node under DDP) and patches are read through
memory maps; without it, every image is decoded into memory in ``setup`` (fine for small sets).

With a ``degradation`` that makes LR on the device (``bd``, ``dn``, ``realistic``: ``lr_on_device``) the
loaders yield HR images only, each with an integer key (the sampler's per-sample seed in training, a hash
of the image name in validation), and the LR images are made on the device in
:meth:`on_after_batch_transfer`; the module gets ``(lr, hr)`` batches either way. ``bicubic`` (or none)
keeps the LR files / CPU MATLAB bicubic exactly as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from pspl_lightning.data.benchmarks import benchmark_files, find_set_dir
from pspl_lightning.data.cache import CacheItem, DecodedCache
from pspl_lightning.data.datasets import (
    HRBatch,
    HRDataset,
    HRPatchDataset,
    ImagePair,
    PairDataset,
    PatchDataset,
    collate_patches,
)
from pspl_lightning.data.hr_images import image_keys, load_hr_images, mapped_hr_images
from pspl_lightning.data.layouts import div2k_files, folder_pairs, folder_val_pairs, index_range
from pspl_lightning.data.pairs import PathPair, cache_items, load_pairs, mapped_pairs
from pspl_lightning.data.sample import build_sample_set, sample_pairs
from pspl_lightning.data.sampling import ResumableRandomSampler, ShardSampler
from pspl_lightning.degradations.base import Degradation, resolve_degradation
from pspl_lightning.errors import ConfigError, DataError
from pspl_lightning.launch.devices import cpu_cores
from pspl_lightning.loop_state import LazyStartDataLoader, batches_done_in_epoch

log = logging.getLogger(__name__)


class _Degrading(NamedTuple):
    """A batch between the transfer hooks: HR images and the degradation's random numbers for them."""

    hr: Tensor
    draws: dict[str, Any]
    scored: bool


class PairedSRDataModule(L.LightningDataModule):
    """Base DataModule: subclasses say which (LR, HR) files train and which make their own validation set.

    Training serves ``len(train) * repeat`` random patches per epoch; each validation set is its own
    dataloader of whole images (batch size 1), reported under ``val/<set>/...`` (the first set also as
    ``val/...``).
    """

    own_val_set = "val"  # the name under which ``own_val_files`` is listed in ``val_sets``

    def __init__(self, scale: int = 2, patch_size: int = 96, batch_size: int = 16, repeat: int = 1,
                 augment: bool = True, num_workers: int | None = 0, pin_memory: bool | None = None,
                 persistent_workers: bool = True, cache_dir: str | None = None,
                 cache_workers: int | None = None, val_sets: Sequence[str] | None = None,
                 benchmark_root: str | None = None, progress: bool = True, seed: int = 0,
                 degradation: Any = None) -> None:
        super().__init__()
        if num_workers is None:  # as many as the cores allow (torch warns beyond them), at most 4
            num_workers = min(4, cpu_cores())
        for key, value, least in (("scale", scale, 1), ("patch_size", patch_size, 1),
                                  ("batch_size", batch_size, 1), ("repeat", repeat, 1),
                                  ("num_workers", num_workers, 0)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
                raise ConfigError(f"data.{key}={value!r} is not allowed: expected an integer >= {least}")
        if patch_size % scale:
            raise ConfigError(f"data.patch_size={patch_size} must be divisible by data.scale={scale}")
        names = [str(n) for n in (val_sets if val_sets is not None else [self.own_val_set])]
        if not names:
            raise ConfigError("data.val_sets is empty: list at least one validation set")
        if len(set(names)) != len(names):
            raise ConfigError(f"data.val_sets lists a set twice: {names}")
        self.scale, self.patch_size, self.batch_size = scale, patch_size, batch_size
        self.repeat, self.augment, self.num_workers = repeat, augment, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.cache = DecodedCache(cache_dir) if cache_dir else None
        self._ensured = False  # prepare_data checked (and built) every entry in this process
        self.cache_workers, self.progress = cache_workers, progress
        self.val_sets, self.benchmark_root = names, benchmark_root
        self.seed = int(seed)
        # None or bicubic: LR files / CPU MATLAB bicubic as always; else HR only, LR made on the device
        self.degradation: Degradation | None = resolve_degradation(degradation, scale)
        self.lr_on_device = self.degradation is not None and self.degradation.lr_on_device
        self.train_pairs: Sequence[ImagePair] = []  # HR arrays alone when LR is made on the device
        self.val_pairs: dict[str, Sequence[ImagePair]] = {}
        self.val_keys: dict[str, list[int]] = {}

    # --- what subclasses provide ------------------------------------------------------------------
    def train_files(self) -> list[PathPair]:
        raise NotImplementedError

    def own_val_files(self) -> list[PathPair]:
        raise NotImplementedError

    # --- files -----------------------------------------------------------------------------------
    @property
    def val_set_names(self) -> list[str]:
        return list(self.val_sets)

    def val_files(self) -> dict[str, list[PathPair]]:
        """Files of every validation set, in ``val_sets`` order."""
        return {name: self._set_files(name) for name in self.val_sets}

    def _set_files(self, name: str) -> list[PathPair]:
        if name == self.own_val_set:
            return self.own_val_files()
        if not self.benchmark_root:
            raise DataError(
                f"data.val_sets lists {name!r}, which is not this DataModule's own set "
                f"({self.own_val_set!r}): set data.benchmark_root to the folder that holds the benchmark sets"
            )
        return benchmark_files(find_set_dir(self.benchmark_root, name), self.scale)

    # --- Lightning hooks -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Check the file layout and build the decoded cache (Lightning runs this in one process per node
        before ``setup``)."""
        files = [*self.train_files(), *(f for fs in self.val_files().values() for f in fs)]
        if self.cache is not None:
            hr_only = self.lr_on_device
            items = [CacheItem(hr) for _, hr in files] if hr_only else cache_items(files, self.scale)
            self.cache.ensure(items, workers=self.cache_workers, progress=self.progress)
            self._ensured = True  # setup, next in this process, need not check every entry again

    def _pairs(self, files: list[PathPair], min_lr_size: int = 0) -> Sequence[ImagePair]:
        if self.lr_on_device:  # HR only, cropped to a multiple of the scale; at least one patch for training
            hr_files, min_hr = [hr for _, hr in files], min_lr_size * self.scale
            if self.cache is None:
                return load_hr_images(hr_files, self.scale, min_hr)  # type: ignore[return-value]
            return mapped_hr_images(hr_files, self.scale, self.cache, min_hr,  # type: ignore[return-value]
                                    self.cache_workers, self.progress, self._ensured)
        if self.cache is None:
            return load_pairs(files, self.scale, min_lr_size)
        return mapped_pairs(files, self.scale, self.cache, min_lr_size, self.cache_workers, self.progress,
                            self._ensured)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and not self.train_pairs:
            self.train_pairs = self._pairs(self.train_files(), self.patch_size // self.scale)
        if stage in (None, "fit", "validate") and not self.val_pairs:
            files = self.val_files()
            self.val_pairs = {name: self._pairs(fs) for name, fs in files.items()}
            self.val_keys = {name: image_keys([hr for _, hr in fs]) for name, fs in files.items()}

    def _pin(self) -> bool:
        return torch.cuda.is_available() if self.pin_memory is None else self.pin_memory

    def train_dataset(self) -> PatchDataset:
        if self.lr_on_device:  # the degradation's random numbers are drawn in the loader's workers
            return HRPatchDataset(self.train_pairs, self.scale, self.patch_size, self.repeat, self.augment,
                                  draw=self.degradation.draw)
        return PatchDataset(self.train_pairs, self.scale, self.patch_size, self.repeat, self.augment)

    def repeat_for(self, images: int, samples_per_step: int) -> int:
        """``data.repeat``, raised (and logged) where an epoch of ``images x repeat`` samples would not fill
        one optimizer step of every rank, so a folder of a few images trains as it is."""
        needed = -(-samples_per_step // max(images, 1))
        if images and self.repeat < needed:
            log.info("data.repeat raised from %d to %d: %d training images x %d fill one step of %d samples "
                     "(batch x ranks x accumulation)", self.repeat, needed, images, needed, samples_per_step)
            return needed
        return self.repeat

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _batches_consumed(self) -> int:
        """Batches of the current epoch the trainer has completed: where a (resumed) epoch's stream starts."""
        return batches_done_in_epoch(self.trainer)

    def train_dataloader(self) -> DataLoader:
        """Shuffled patches from a :class:`ResumableRandomSampler`: one shard per DDP rank, and a stream
        that depends on the seed and the global step only (exact resume, any number of workers). The
        trainer runs with ``use_distributed_sampler=False`` so that Lightning keeps this sampler."""
        rank, world = self._rank_world()
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        self.repeat = self.repeat_for(len(self.train_pairs), world * self.batch_size * accumulate)
        dataset = self.train_dataset()
        sampler = ResumableRandomSampler(len(dataset), self.batch_size, self.seed, rank, world,
                                         position_fn=self._batches_consumed, batches_multiple_of=accumulate)
        return LazyStartDataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                                   num_workers=self.num_workers, pin_memory=self._pin(),
                                   collate_fn=collate_patches,
                                   persistent_workers=self.persistent_workers and self.num_workers > 0)

    def val_dataloader(self) -> list[DataLoader]:
        """Whole images, one loader per set; under DDP each rank takes every world-th image, without the
        padding duplicates of a DistributedSampler, so synced sums give the single-process metrics."""
        rank, world = self._rank_world()
        datasets = [HRDataset(pairs, self.val_keys[name]) if self.lr_on_device else PairDataset(pairs)
                    for name, pairs in self.val_pairs.items()]
        return [DataLoader(ds, batch_size=1, sampler=ShardSampler(len(ds), rank, world), num_workers=0,
                           pin_memory=self._pin(), collate_fn=collate_patches if self.lr_on_device else None)
                for ds in datasets]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """An HR-only batch: its degradation's random numbers, drawn on the CPU from each image's key (by the
        training loader's workers already, here for validation images)."""
        if not isinstance(batch, HRBatch):
            return batch
        scored = bool(torch.as_tensor(batch.scored).all())
        draws = batch.draws
        if draws is None:
            draws = self.degradation.draw(batch.key, batch.hr.shape[-2:])
        return _Degrading(batch.hr, draws, scored)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Make the LR images on the device (Lightning calls this, in preference to the module's hook, for
        every batch once it is there): ``(lr, hr)`` as from LR files, ``(lr, hr, False)`` for padding."""
        if not isinstance(batch, _Degrading):
            return batch
        lr = self.degradation.apply(batch.hr, batch.draws)
        return (lr, batch.hr) if batch.scored else (lr, batch.hr, torch.zeros(1, dtype=torch.bool,
                                                                               device=lr.device))


class SampleDataModule(PairedSRDataModule):
    """The scikit-image sample set (built on first use under ``root``): 6 training, 2 validation photos."""

    own_val_set = "sample"

    def __init__(self, root: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)

    def prepare_data(self) -> None:
        build_sample_set(self.root, self.scale)
        super().prepare_data()

    def train_files(self) -> list[PathPair]:
        return sample_pairs(self.root, "train", self.scale)

    def own_val_files(self) -> list[PathPair]:
        return sample_pairs(self.root, "val", self.scale)


class DIV2KDataModule(PairedSRDataModule):
    """DIV2K from its standard folders: train on images ``train_range`` of ``DIV2K_train_*``, validate
    (set ``div2k_val``) on ``val_range`` of ``DIV2K_valid_*`` (801-810 by default for speed; 801-900 is the
    full set). LR images come from ``*_LR_bicubic/X<s>``, or from HR by MATLAB bicubic when that folder
    is absent."""

    own_val_set = "div2k_val"

    def __init__(self, root: str, train_range: Sequence[int] = (1, 800),
                 val_range: Sequence[int] = (801, 810), **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.train_range = index_range(list(train_range), "train_range")
        self.val_range = index_range(list(val_range), "val_range")

    def train_files(self) -> list[PathPair]:
        return div2k_files(self.root, "train", self.train_range, self.scale, "train_range")

    def own_val_files(self) -> list[PathPair]:
        return div2k_files(self.root, "valid", self.val_range, self.scale, "val_range")


class FolderDataModule(PairedSRDataModule):
    """Any folder of HR images (``hr_dir``) with an optional LR folder (``lr_dir``; when null, LR images are
    made from HR, cropped to a multiple of the scale, with MATLAB bicubic); its own validation set ``val``
    comes from ``val_hr_dir`` / ``val_lr_dir`` the same way. Relative folders are taken under ``root``."""

    own_val_set = "val"

    def __init__(self, hr_dir: str = "HR", lr_dir: str | None = None, val_hr_dir: str | None = None,
                 val_lr_dir: str | None = None, root: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)

        def under_root(folder: str | None) -> str | None:
            return None if folder is None else str(Path(root or ".").expanduser() / Path(folder).expanduser())

        self.hr_dir, self.lr_dir = under_root(hr_dir), under_root(lr_dir)
        self.val_hr_dir, self.val_lr_dir = under_root(val_hr_dir), under_root(val_lr_dir)

    def train_files(self) -> list[PathPair]:
        return folder_pairs(self.hr_dir, self.lr_dir, self.scale, "hr_dir")

    def own_val_files(self) -> list[PathPair]:
        return folder_val_pairs(self.val_hr_dir, self.val_lr_dir, self.scale)
