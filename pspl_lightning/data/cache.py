"""Decoded-image cache: each image once decoded to an uncompressed ``.npy`` that patches read through a
memory map, touching only the rows of the patch instead of decoding a whole 2K PNG per sample.

An entry is ``<cache_dir>/<stem>-<hash of the source path>[-lrx<s>].npy`` plus a ``.json`` sidecar with the
source's size, mtime and the array shape; an entry whose sidecar disagrees with the source, or whose array
header or file length disagrees with the sidecar, is stale and rebuilt. Files are written to a temporary
name and renamed, so a crash or a concurrent writer never leaves a torn entry.

``index.json`` gathers every checked entry's sidecar with the array file's size and mtime, so that opening a
cache of thousands of images reads one file (and stats each array and source) instead of two small files
per image. It only speeds the check up: an entry it does not hold, or whose array file changed since, is
checked from its sidecar and header as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspl_lightning.atomic import atomic_path
from pspl_lightning.data.io import read_image
from pspl_lightning.errors import DataNotFoundError, Interrupted
from pspl_lightning.imresize import make_lr
from pspl_lightning.launch.devices import cpu_cores

log = logging.getLogger(__name__)

CACHE_VERSION = 1
INDEX = "index.json"


class CacheInterrupted(Interrupted):
    """Building the cache was interrupted (Ctrl-C); finished entries are kept, the message says so."""


@dataclass(frozen=True)
class CacheItem:
    """One cached array: the decoded ``source`` (``lr_scale=0``) or its MATLAB-bicubic ``1/lr_scale`` LR."""

    source: Path
    lr_scale: int = 0

    @property
    def variant(self) -> str:
        return "decoded" if self.lr_scale == 0 else f"matlab_bicubic_x{self.lr_scale}"


def _read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of an ``.npy`` file, reading only its header."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(f)
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered array")
        return tuple(shape), dtype, f.tell()


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


class DecodedCache:
    """A folder of decoded uint8 H x W x 3 arrays, one per (source image, variant), kept in step with the
    sources."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir).expanduser()
        self._indexed: dict[str, dict] | None = None  # index.json's entries, once read
        self._learned: dict[str, dict] = {}  # entries checked from their sidecars, not yet in index.json
        self._fresh: dict[CacheItem, tuple[int, int, int]] = {}  # shapes this instance last found fresh
        self._paths: dict[CacheItem, Path] = {}
        self._real_dirs: dict[str, str] = {}

    def array_path(self, item: CacheItem) -> Path:
        path = self._paths.get(item)
        if path is None:
            source = self._real(Path(item.source))
            digest = hashlib.sha1(str(source).encode()).hexdigest()[:12]
            suffix = f"-lrx{item.lr_scale}" if item.lr_scale else ""
            path = self._paths[item] = self.cache_dir / f"{source.stem}-{digest}{suffix}.npy"
        return path

    def _real(self, source: Path) -> Path:
        """``source.resolve()`` with its folder resolved once per instance: resolving every path anew (a
        system call per path component) was most of the start-up time of an 800-image cache."""
        if source.is_symlink() or source.name in ("", ".", ".."):
            return source.resolve()
        folder = os.path.abspath(source.parent)
        real = self._real_dirs.get(folder)
        if real is None:
            real = self._real_dirs[folder] = os.path.realpath(folder)
        return Path(real, source.name)

    def _meta(self, item: CacheItem, shape: tuple[int, ...]) -> dict:
        stat = Path(item.source).stat()
        return {"version": CACHE_VERSION, "source": str(self._real(Path(item.source))),
                "variant": item.variant, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "shape": list(shape)}

    def _index(self) -> dict[str, dict]:
        """The entries of ``index.json`` (read once per instance; an unreadable index is no index)."""
        if self._indexed is None:
            try:
                index = json.loads((self.cache_dir / INDEX).read_text())
                entries = index["entries"] if index.get("version") == CACHE_VERSION else {}
                self._indexed = {k: v for k, v in entries.items() if isinstance(v, dict)}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self._indexed = {}
        return self._indexed

    def _write_index(self) -> None:
        """Merge what this instance checked into ``index.json`` (atomically: a concurrent writer's entries
        may be lost, and are then checked from their sidecars and indexed again)."""
        if not self._learned:
            return
        on_disk, self._indexed = self._indexed, None
        merged = {**self._index(), **self._learned}
        payload = json.dumps({"version": CACHE_VERSION, "entries": merged}, separators=(",", ":")).encode()
        try:
            _atomic_write(self.cache_dir / INDEX, lambda f: f.write(payload))
        except OSError as exc:  # a read-only cache still works, only its check is slower
            log.debug("decoded cache %s: index not written (%s)", self.cache_dir, exc)
            self._indexed = on_disk
            return
        self._indexed, self._learned = merged, {}

    def cached_shape(self, item: CacheItem) -> tuple[int, int, int] | None:
        """Shape of the entry when it is fresh (matches its source and is intact), else None."""
        shape = self._check(item)
        if shape is None:
            self._fresh.pop(item, None)
        else:
            self._fresh[item] = shape
        return shape

    def _check(self, item: CacheItem) -> tuple[int, int, int] | None:
        npy = self.array_path(item)
        try:
            stat, array = Path(item.source).stat(), npy.stat()
        except OSError:
            return None
        meta = self._learned.get(npy.name) or self._index().get(npy.name)
        if not (meta and meta.get("array_size") == array.st_size
                and meta.get("array_mtime_ns") == array.st_mtime_ns):
            meta = self._checked_sidecar(npy, array.st_size)
            if meta is None:
                return None
            meta = self._learned[npy.name] = {**meta, "array_size": array.st_size,
                                              "array_mtime_ns": array.st_mtime_ns}
        fresh = (meta.get("version") == CACHE_VERSION and meta.get("variant") == item.variant
                 and meta.get("size") == stat.st_size and meta.get("mtime_ns") == stat.st_mtime_ns)
        return tuple(meta["shape"]) if fresh else None  # type: ignore[return-value]

    @staticmethod
    def _checked_sidecar(npy: Path, size_on_disk: int) -> dict | None:
        """The sidecar of ``npy`` when the array's header and length agree with it, else None."""
        try:
            meta = json.loads(npy.with_suffix(".json").read_text())
            shape, dtype, offset = _read_npy_header(npy)
        except (OSError, ValueError):
            return None
        intact = (isinstance(meta, dict) and tuple(meta.get("shape", ())) == shape and dtype == np.uint8
                  and len(shape) == 3 and shape[2] == 3 and size_on_disk == offset + int(np.prod(shape)))
        return meta if intact else None

    def _write(self, item: CacheItem, arr: np.ndarray) -> None:
        npy = self.array_path(item)
        meta_path = npy.with_suffix(".json")
        meta_path.unlink(missing_ok=True)  # an entry without sidecar is stale until both are written
        _atomic_write(npy, lambda f: np.save(f, np.ascontiguousarray(arr), allow_pickle=False))
        meta = self._meta(item, arr.shape)
        _atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))
        array = npy.stat()  # into the index as written (the building threads: one key each)
        self._learned[npy.name] = {**meta, "array_size": array.st_size, "array_mtime_ns": array.st_mtime_ns}
        self._fresh[item] = arr.shape

    def _build_source(self, source: Path, items: list[CacheItem]) -> None:
        """Decode ``source`` once and write every stale variant of it."""
        img = read_image(source)
        for item in items:
            self._write(item, img if item.lr_scale == 0 else make_lr(img, item.lr_scale))

    def ensure(self, items: Iterable[CacheItem], workers: int | None = None, progress: bool = True) -> int:
        """Build every missing or stale entry (decoding each source once); return how many were built.

        Decoding runs in ``workers`` threads (PNG decoding and numpy release the GIL).
        """
        items = list(dict.fromkeys(items))
        stale: dict[Path, list[CacheItem]] = {}
        for item in items:
            if self.cached_shape(item) is None:
                stale.setdefault(Path(item.source), []).append(item)
        if not stale:
            self._write_index()
            return 0
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        workers = workers or cpu_cores()  # every core: decoding and writing release the GIL
        n_built = sum(len(v) for v in stale.values())
        log.info("Decoded cache %s: building %d of %d arrays (%d threads)", self.cache_dir, n_built,
                 len(items), workers)
        from pspl_lightning.data.progress import image_progress

        pool = ThreadPoolExecutor(workers)
        done = 0
        try:
            with image_progress(disable=not progress) as bar:
                task = bar.add_task(f"decoding into {self.cache_dir}", total=len(stale))
                futures = [pool.submit(self._build_source, src, its) for src, its in stale.items()]
                for future in as_completed(futures):
                    future.result()  # re-raises the first failure (it names the file)
                    done += 1
                    bar.advance(task)
        except BaseException as exc:  # Ctrl-C or a bad image: the entries written so far stay valid
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(exc, KeyboardInterrupt):
                raise CacheInterrupted(f"interrupted after {done} of {len(stale)} images; the decoded cache "
                                       f"{self.cache_dir} keeps them: run the same command again to build "
                                       f"the other {len(stale) - done}") from None
            raise
        pool.shutdown()
        self._write_index()
        return n_built

    def shape(self, item: CacheItem) -> tuple[int, int, int]:
        """Shape of a fresh entry, as this instance's last :meth:`ensure` found it (no second look at the
        files); raises if it is missing or stale (run :meth:`ensure` first)."""
        shape = self._fresh.get(item) or self.cached_shape(item)
        if shape is None:
            raise DataNotFoundError(
                f"no fresh cache entry for {item.source} ({item.variant}) in {self.cache_dir}"
            )
        return shape


def _open_file_budget() -> int:
    """How many arrays a process may keep mapped: each memory map holds a file descriptor, so raise the
    soft descriptor limit to the hard one and keep a margin for everything else."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 16 if hard == resource.RLIM_INFINITY else min(hard, 1 << 16)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
            soft = max(soft, target)
        except (ValueError, OSError):
            pass
    return max(16, (soft - 256) // 2)


class MappedPairs(Sequence):
    """Aligned (LR, HR) uint8 arrays read through memory maps, opened lazily in each process.

    Only paths and shapes are pickled (into DataLoader workers); each process maps the files on first use
    and keeps at most a descriptor budget's worth of maps open (least recently used are closed).
    """

    def __init__(self, entries: Sequence[tuple[Path, Path, tuple[int, int]]], scale: int) -> None:
        self.entries = list(entries)  # (LR .npy, HR .npy, (LR height, LR width))
        self.scale = scale
        self._maps: OrderedDict[Path, np.ndarray] | None = None
        self._budget = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return len(self.entries)

    def _map(self, path: Path) -> np.ndarray:
        if self._maps is None:
            self._maps, self._budget = OrderedDict(), _open_file_budget()
        arr = self._maps.get(path)
        if arr is None:
            # a plain ndarray view of the map: slicing np.memmap objects is several times slower
            arr = np.load(path, mmap_mode="r").view(np.ndarray)
            self._maps[path] = arr
            while len(self._maps) > self._budget:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(path)
        return arr

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        lr_path, hr_path, (lh, lw) = self.entries[index]
        return self._map(lr_path), self._map(hr_path)[: lh * self.scale, : lw * self.scale]


class MappedImages(MappedPairs):
    """Single uint8 images (HR only, for degradations made on the device) read through memory maps and
    cropped to ``(height, width)``; mapped lazily in each process like :class:`MappedPairs`."""

    def __init__(self, entries: Sequence[tuple[Path, tuple[int, int]]]) -> None:
        super().__init__([], scale=1)
        self.entries = list(entries)  # type: ignore[assignment]  # (.npy, (height, width))

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        path, (h, w) = self.entries[index]
        return self._map(path)[:h, :w]
