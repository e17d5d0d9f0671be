"""``data=stream``: random HR patches from litdata chunks (a local folder or an object store), LR made on the
device by the ``degradation`` group, validation from folders as ``data=folder`` does.

The stream follows the project's (seed, position) rule, like every other DataModule: batch ``b`` of a run is
a pure function of the seed, the epoch and the rank, and a resumed run starts at the batch the trainer has
reached (:class:`~pspl_lightning.data.sampling.ResumableRandomSampler`). Images are read through litdata's
``StreamingDataset`` (chunk download, local cache with ``max_cache_size``); the epoch order keeps chunks
together so that each rank reads its own chunks, and each image gives all of its ``repeat`` patches of the
epoch while it is in memory (``group_images`` images at a time, their patches shuffled together).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pspl_lightning.data.datamodule import PairedSRDataModule
from pspl_lightning.data.datasets import HRPatchDataset, collate_patches
from pspl_lightning.data.hr_images import modcropped_size
from pspl_lightning.data.layouts import folder_val_pairs
from pspl_lightning.data.optimize import SIDECAR, check_reachable, decode_item, is_remote, require_litdata
from pspl_lightning.data.pairs import PathPair, TooSmallError
from pspl_lightning.data.sampling import _SEED_STRIDE, ResumableRandomSampler
from pspl_lightning.degradations.standard import Bicubic
from pspl_lightning.errors import ConfigError, DataError, DataNotFoundError
from pspl_lightning.loop_state import LazyStartDataLoader

log = logging.getLogger(__name__)


def _read_index(folder: Path, key: str, local: bool = True) -> list[int]:
    """Items per chunk, from litdata's ``index.json`` of ``folder``; checks that it holds our HR images and,
    for a ``local`` folder, that every chunk file is there whole."""
    index_file = folder / "index.json"
    if local and not folder.exists():
        raise DataNotFoundError(f"{key}={folder} does not exist; expected a folder written by pspl-data "
                                f"optimize input=<HR folder> output={folder}")
    if not index_file.is_file():
        raise DataNotFoundError(f"{key}={folder} has no litdata index ({index_file} not found): write the "
                                f"folder with pspl-data optimize input=<HR folder> output={folder}")
    try:
        index = json.loads(index_file.read_text())
        chunks = [int(c["chunk_size"]) for c in index["chunks"]]
        files = [(str(c["filename"]), int(c["chunk_bytes"])) for c in index["chunks"]]
        fields = set(index["config"]["types"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{index_file}: not a litdata index ({exc!r})") from None
    if "name" not in fields or not fields & {"image", "png"}:
        raise DataError(f"{key}={folder} holds items with fields {sorted(fields)}, not HR images written by "
                        f"pspl-data optimize")
    if not sum(chunks):
        raise DataError(f"{key}={folder} holds no images")
    for name, size in files if local else ():
        chunk = folder / name
        found = chunk.stat().st_size if chunk.is_file() else None
        if found != size:
            state = "is missing" if found is None else f"is {found} bytes where index.json says {size}"
            raise DataError(f"{key}={folder}: chunk {name} {state} (truncated or partly copied); copy the "
                            f"folder again or write it anew with pspl-data optimize")
    return chunks


def open_stream(input_dir: str, max_cache_size: int | str, cache_dir: str | None, key: str = "data.input_dir"
                ) -> Any:
    """litdata's ``StreamingDataset`` over ``input_dir``; remote chunks are downloaded into its cache (at most
    ``max_cache_size``) instead of being read item by item."""
    litdata = require_litdata()
    if is_remote(input_dir):
        check_reachable(input_dir, key)
    try:
        dataset = litdata.StreamingDataset(input_dir, cache_dir=cache_dir, max_cache_size=max_cache_size)
    except Exception as exc:  # litdata and its storage clients raise many kinds; all say "cannot open"
        raise DataError(f"{key}={input_dir}: litdata cannot open it ({type(exc).__name__}: {exc})") from None
    return dataset


class StreamedImages(Sequence[np.ndarray]):
    """The optimized HR images as a sequence, read on demand; each process opens its own
    ``StreamingDataset`` and keeps the ``keep`` most recently read images (pickles without them). An image
    smaller than ``min_size`` is passed over: its place is taken by the next one of the stream."""

    def __init__(self, input_dir: str, length: int, max_cache_size: int | str, cache_dir: str | None,
                 scale: int, min_size: int, keep: int) -> None:
        self.input_dir, self.length, self.max_cache_size = input_dir, length, max_cache_size
        self.cache_dir, self.scale, self.min_size, self.keep = cache_dir, scale, min_size, keep
        self._dataset: Any = None
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()
        self._small: set[int] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None, "_recent": OrderedDict(), "_small": set()}

    def __len__(self) -> int:
        return self.length

    def read(self, index: int) -> tuple[str, np.ndarray]:
        """(name, H x W x 3 uint8 image cropped to a multiple of the scale) of item ``index``, read now."""
        if self._dataset is None:
            self._dataset = open_stream(self.input_dir, self.max_cache_size, self.cache_dir)
            if is_remote(self.input_dir):  # whole chunks into the local cache (bounded by max_cache_size)
                self._dataset[0]
                self._dataset.on_demand_bytes = False
        item = self._dataset[int(index)]
        image = decode_item(item)  # litdata's numpy deserializer copies out of the chunk: the array is ours
        name = str(item["name"])
        h, w = modcropped_size(image.shape, self.scale, Path(self.input_dir) / name, self.min_size)
        return name, image[:h, :w]

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        for step in range(self.length):
            i = (int(index) + step) % self.length
            if i in self._small:
                continue
            if i not in self._recent:
                try:
                    self._recent[i] = self.read(i)[1]
                except TooSmallError:
                    self._small.add(i)
                    continue
                while len(self._recent) > self.keep:
                    self._recent.popitem(last=False)
            self._recent.move_to_end(i)
            return self._recent[i]
        raise DataError(f"data.input_dir={self.input_dir}: every image is smaller than the HR patch of "
                        f"{self.min_size} pixels; lower data.patch_size")


class GroupedStreamSampler(ResumableRandomSampler):
    """The (seed, position) sampler over streamed images, ordered for chunked storage.

    Per epoch (from the seed and the epoch alone): the chunks in a random order, the images of each chunk
    shuffled; rank ``r`` takes the ``r``-th contiguous block of ``images // world`` of that order (disjoint
    images, mostly whole chunks); its images go in consecutive groups of ``group`` images whose
    ``group x repeat`` patches (one seed each) are shuffled together. Items are ``(image, seed)``."""

    def __init__(self, chunk_sizes: Sequence[int], repeat: int, group: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, **kwargs: Any) -> None:
        images = sum(chunk_sizes)
        self.per_rank_images, self.repeat, self.group = images // world_size, repeat, group
        if self.per_rank_images == 0:
            raise DataError(f"{images} streamed images cannot give each of {world_size} ranks one image")
        sizes = torch.tensor(list(chunk_sizes))
        self.chunk_of = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
        super().__init__(self.per_rank_images * world_size * repeat, batch_size, seed, rank, world_size,
                         **kwargs)

    def epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
        n_chunks, n_images = int(self.chunk_of.max()) + 1, len(self.chunk_of)
        chunk_place = torch.randperm(n_chunks, generator=g)[self.chunk_of].double()
        order = torch.argsort(chunk_place + torch.rand(n_images, generator=g, dtype=torch.float64))
        n = self.per_rank_images
        slots = order[self.rank * n : (self.rank + 1) * n].repeat_interleave(self.repeat)
        group_of = torch.arange(n * self.repeat) // (self.group * self.repeat)
        # every rank draws the numbers of all ranks, so that rank r's are the same whatever rank draws them
        shuffle = torch.rand(self.world_size, n * self.repeat, generator=g, dtype=torch.float64)[self.rank]
        seeds = torch.randint(0, 2**62, (self.world_size, n * self.repeat), generator=g)[self.rank]
        perm = torch.argsort(group_of.double() + shuffle)
        return slots[perm][: len(self)], seeds[: len(self)]


class StreamDataModule(PairedSRDataModule):
    """Trains on HR images written by ``pspl-data optimize`` to ``input_dir`` (a folder or ``s3://...``),
    streamed through litdata; validates on ``val_hr_dir`` (set ``val``) and benchmark sets. Training batches
    are HR only; the ``degradation`` (bicubic when none) makes the LR images on the device. Relative local
    folders are taken under ``root``."""

    own_val_set = "val"

    def __init__(self, input_dir: str, val_hr_dir: str | None = None, val_lr_dir: str | None = None,
                 max_cache_size: int | str = "50GB", stream_cache_dir: str | None = None,
                 group_images: int = 8, root: str | None = None, **kwargs: Any) -> None:
        require_litdata()
        super().__init__(**kwargs)
        if not (isinstance(group_images, int) and not isinstance(group_images, bool) and group_images >= 1):
            raise ConfigError(f"data.group_images={group_images!r} is not allowed: expected an integer >= 1")
        if not input_dir:
            raise ConfigError("data.input_dir is not set: give the folder (or s3://...) that pspl-data "
                              "optimize wrote")

        def under_root(folder: str | None) -> str | None:
            return None if folder is None else str(Path(root or ".").expanduser() / Path(folder).expanduser())

        self.input_dir = str(input_dir) if is_remote(str(input_dir)) else under_root(str(input_dir))
        self.val_hr_dir, self.val_lr_dir = under_root(val_hr_dir), under_root(val_lr_dir)
        self.max_cache_size, self.stream_cache_dir = max_cache_size, stream_cache_dir
        self.group_images = group_images
        if self.degradation is None:  # HR-only batches need a degradation for their LR: MATLAB bicubic
            self.degradation = Bicubic(self.scale)
        self.chunk_sizes: list[int] = []
        self._said_small = 0  # the patch size whose too-small images were reported already

    def train_files(self) -> list[PathPair]:
        return []  # streamed, not files

    def own_val_files(self) -> list[PathPair]:
        return folder_val_pairs(self.val_hr_dir, self.val_lr_dir, self.scale)

    def _open_index(self) -> list[int]:
        """Items per chunk; a remote index is fetched by litdata into its cache first."""
        if not is_remote(self.input_dir):
            chunks = _read_index(Path(self.input_dir), "data.input_dir")
            self._check_smallest(Path(self.input_dir) / SIDECAR)
            return chunks
        dataset = open_stream(self.input_dir, self.max_cache_size, self.stream_cache_dir)
        return _read_index(Path(dataset.input_dir.path), "data.input_dir", local=False)

    def _check_smallest(self, sidecar: Path) -> None:
        """Count the images that ``pspl-data optimize`` recorded as smaller than the patch (one line each
        and the count; training passes over them); all of them is an error."""
        if not sidecar.is_file():
            return
        meta = json.loads(sidecar.read_text())
        small = meta["smallest"]
        sizes = meta.get("sizes") or {Path(small["file"]).stem: [small["height"], small["width"]]}
        folder = Path(self.input_dir)
        too_small = []
        for name, size in sizes.items():
            try:
                modcropped_size(size, self.scale, folder / name, self.patch_size)
            except TooSmallError as exc:
                too_small.append(exc)
        if too_small and len(too_small) == len(sizes) == meta["images"]:
            raise DataError(f"all {len(sizes)} streamed images are smaller than the HR patch of "
                            f"{self.patch_size} pixels, e.g. {too_small[0]}")
        for exc in too_small if self._said_small != self.patch_size else ():
            log.warning("skipped %s", exc.short)
        if too_small and self._said_small != self.patch_size:
            log.warning("skipped %d of %d streamed images smaller than the HR patch of %d pixels (their "
                        "patches come from the next image)", len(too_small), meta["images"], self.patch_size)
        self._said_small = self.patch_size

    def prepare_data(self) -> None:
        self._open_index()
        super().prepare_data()  # the validation sets' decoded cache

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and not self.train_pairs:
            self.chunk_sizes = self._open_index()
            self.train_pairs = StreamedImages(self.input_dir, sum(self.chunk_sizes), self.max_cache_size,
                                              self.stream_cache_dir, self.scale, self.patch_size,
                                              keep=2 * self.group_images)
        super().setup(stage)

    def train_dataset(self) -> HRPatchDataset:
        return HRPatchDataset(self.train_pairs, self.scale, self.patch_size, 1, self.augment,
                              draw=self.degradation.draw)

    def train_dataloader(self) -> DataLoader:
        """Patches in the :class:`GroupedStreamSampler`'s order, from the batch the trainer has reached."""
        rank, world = self._rank_world()
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        repeat = self.repeat_for(len(self.train_pairs) // world * world, world * self.batch_size * accumulate)
        sampler = GroupedStreamSampler(self.chunk_sizes, repeat, self.group_images, self.batch_size,
                                       self.seed, rank, world, position_fn=self._batches_consumed,
                                       batches_multiple_of=accumulate)
        return LazyStartDataLoader(self.train_dataset(), batch_size=self.batch_size, sampler=sampler,
                                   drop_last=True, num_workers=self.num_workers, pin_memory=self._pin(),
                                   collate_fn=collate_patches,
                                   persistent_workers=self.persistent_workers and self.num_workers > 0)
