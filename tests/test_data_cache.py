"""The decoded cache: built once, atomic, validated against its source, rebuilt when stale, mapped lazily."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pspl_lightning.data import cache as cache_mod
from pspl_lightning.data.cache import CacheItem, DecodedCache, MappedPairs
from pspl_lightning.data.io import ImageReadError, write_png
from pspl_lightning.data.pairs import mapped_pairs
from pspl_lightning.imresize import make_lr


def _images(folder: Path, n: int = 3, shape: tuple[int, int] = (40, 52)) -> list[tuple[Path, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        write_png(folder / f"{i:04d}.png", img)
        out.append((folder / f"{i:04d}.png", img))
    return out


def test_builds_once_and_matches_the_source(tmp_path: Path) -> None:
    images = _images(tmp_path / "src")
    cache = DecodedCache(tmp_path / "elsewhere" / "cache")
    items = [CacheItem(p) for p, _ in images] + [CacheItem(images[0][0], 2)]
    assert cache.ensure(items, progress=False) == 4
    for (path, img), item in zip(images, items, strict=False):
        arr = np.load(cache.array_path(item), mmap_mode="r")
        assert isinstance(arr, np.memmap) and arr.dtype == np.uint8
        np.testing.assert_array_equal(arr, img)
        meta = json.loads(cache.array_path(item).with_suffix(".json").read_text())
        assert meta["size"] == path.stat().st_size and meta["mtime_ns"] == path.stat().st_mtime_ns
        assert meta["shape"] == [40, 52, 3] and meta["source"] == str(path.resolve())
    np.testing.assert_array_equal(np.load(cache.array_path(items[-1])), make_lr(images[0][1], 2))
    assert cache.shape(items[-1]) == (20, 26, 3)
    # nothing written next to the sources, no temporary files left in the cache
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert not [p for p in cache.cache_dir.iterdir() if p.name.startswith(".")]
    mtimes = {p: p.stat().st_mtime_ns for p in cache.cache_dir.iterdir()}
    assert cache.ensure(items, progress=False) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.cache_dir.iterdir()} == mtimes


def test_changed_source_is_rebuilt(tmp_path: Path) -> None:
    (path, _), *_ = _images(tmp_path / "src", n=1)
    cache = DecodedCache(tmp_path / "cache")
    item, lr_item = CacheItem(path), CacheItem(path, 2)
    cache.ensure([item, lr_item], progress=False)
    new = np.full((44, 60, 3), 9, np.uint8)
    write_png(path, new)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert cache.cached_shape(item) is None
    assert cache.ensure([item, lr_item], progress=False) == 2
    np.testing.assert_array_equal(np.load(cache.array_path(item)), new)
    assert cache.shape(lr_item) == (22, 30, 3)


@pytest.mark.parametrize("damage", ["truncate", "sidecar_shape", "sidecar_missing", "array_missing"])
def test_damaged_entry_is_rebuilt(tmp_path: Path, damage: str) -> None:
    (path, img), *_ = _images(tmp_path / "src", n=1)
    cache = DecodedCache(tmp_path / "cache")
    item = CacheItem(path)
    cache.ensure([item], progress=False)
    npy = cache.array_path(item)
    sidecar = npy.with_suffix(".json")
    if damage.startswith("sidecar"):  # a cache written before index.json: the sidecar is all there is
        (cache.cache_dir / cache_mod.INDEX).unlink()
        cache = DecodedCache(cache.cache_dir)
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-100])
    elif damage == "sidecar_shape":
        meta = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**meta, "shape": [40, 50, 3]}))
    elif damage == "sidecar_missing":
        sidecar.unlink()
    else:
        npy.unlink()
    assert cache.cached_shape(item) is None
    with pytest.raises(FileNotFoundError, match="no fresh cache entry"):
        cache.shape(item)
    assert cache.ensure([item], progress=False) == 1
    np.testing.assert_array_equal(np.load(npy), img)


def test_index_replaces_the_per_entry_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache with index.json is checked without opening a sidecar or an array header; an array file that
    changed after indexing is checked from its sidecar again, and a garbled index is no index."""
    images = _images(tmp_path / "src", n=4)
    cache = DecodedCache(tmp_path / "cache")
    items = [CacheItem(p) for p, _ in images] + [CacheItem(p, 2) for p, _ in images]
    cache.ensure(items, progress=False)
    index = json.loads((cache.cache_dir / cache_mod.INDEX).read_text())
    assert sorted(index["entries"]) == sorted(cache.array_path(it).name for it in items)
    entry = index["entries"][cache.array_path(items[4]).name]
    assert entry["shape"] == [20, 26, 3] and entry["variant"] == "matlab_bicubic_x2"
    assert entry["array_size"] == cache.array_path(items[4]).stat().st_size

    opened: list[str] = []
    real_header = cache_mod._read_npy_header
    monkeypatch.setattr(cache_mod, "_read_npy_header",
                        lambda path: opened.append(path.name) or real_header(path))
    fresh = DecodedCache(cache.cache_dir)
    assert [fresh.cached_shape(it) for it in items] == [(40, 52, 3)] * 4 + [(20, 26, 3)] * 4
    assert opened == []
    assert fresh.ensure(items, progress=False) == 0

    # an array rewritten behind the index's back (same bytes, new mtime) is checked from its sidecar
    npy = cache.array_path(items[0])
    os.utime(npy, ns=(npy.stat().st_atime_ns, npy.stat().st_mtime_ns + 10**9))
    assert DecodedCache(cache.cache_dir).cached_shape(items[0]) == (40, 52, 3)
    assert opened == [npy.name]
    npy.write_bytes(npy.read_bytes()[:-10])  # and a truncated one is stale, index or not
    assert DecodedCache(cache.cache_dir).cached_shape(items[0]) is None

    (cache.cache_dir / cache_mod.INDEX).write_text("{not json")
    assert DecodedCache(cache.cache_dir).cached_shape(items[1]) == (40, 52, 3)
    rebuilt = DecodedCache(cache.cache_dir)
    assert rebuilt.ensure(items, progress=False) == 1  # the truncated array; the index is written anew
    assert len(json.loads((cache.cache_dir / cache_mod.INDEX).read_text())["entries"]) == len(items)


def test_index_does_not_hide_a_changed_source(tmp_path: Path) -> None:
    (path, _), *_ = _images(tmp_path / "src", n=1)
    cache = DecodedCache(tmp_path / "cache")
    cache.ensure([CacheItem(path)], progress=False)
    write_png(path, np.zeros((44, 60, 3), np.uint8))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    reopened = DecodedCache(cache.cache_dir)
    assert reopened.cached_shape(CacheItem(path)) is None
    assert reopened.ensure([CacheItem(path)], progress=False) == 1
    assert DecodedCache(cache.cache_dir).shape(CacheItem(path)) == (44, 60, 3)


def test_unreadable_source_names_the_file_and_leaves_no_entry(tmp_path: Path) -> None:
    (good, _), *_ = _images(tmp_path / "src", n=1)
    bad = tmp_path / "src" / "broken.png"
    bad.write_bytes(good.read_bytes()[:300])  # a truncated PNG
    cache = DecodedCache(tmp_path / "cache")
    with pytest.raises(ImageReadError, match=r"broken\.png: cannot decode image"):
        cache.ensure([CacheItem(bad)], progress=False)
    assert not cache.array_path(CacheItem(bad)).exists()
    assert not [p for p in cache.cache_dir.iterdir() if p.name.startswith(".")]


def test_mapped_pairs_pickle_paths_not_pixels(tmp_path: Path) -> None:
    images = _images(tmp_path / "src", n=2, shape=(200, 300))
    cache = DecodedCache(tmp_path / "cache")
    pairs = mapped_pairs([(None, p) for p, _ in images], 2, cache, progress=False)
    lr, hr = pairs[1]
    assert type(lr) is np.ndarray and not lr.flags.owndata  # a view of the memory map, not a copy
    np.testing.assert_array_equal(hr, images[1][1])
    np.testing.assert_array_equal(lr, make_lr(images[1][1], 2))
    blob = pickle.dumps(pairs)
    assert len(blob) < 2000 < hr.nbytes
    clone = pickle.loads(blob)
    assert clone._maps is None  # nothing mapped until the worker reads
    np.testing.assert_array_equal(clone[0][1], images[0][1])


def test_map_budget_closes_least_recently_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _images(tmp_path / "src", n=3)
    cache = DecodedCache(tmp_path / "cache")
    pairs = mapped_pairs([(None, p) for p, _ in images], 2, cache, progress=False)
    monkeypatch.setattr(cache_mod, "_open_file_budget", lambda: 3)
    for _ in range(2):
        for i, (_, img) in enumerate(images):
            np.testing.assert_array_equal(pairs[i][1], img)
            assert len(pairs._maps) <= 3
    assert isinstance(pairs, MappedPairs) and len(pairs) == 3


def test_hr_is_cropped_to_scale_times_lr(tmp_path: Path) -> None:
    (path, img), *_ = _images(tmp_path / "src", n=1, shape=(41, 55))
    pairs = mapped_pairs([(None, path)], 3, DecodedCache(tmp_path / "cache"), progress=False)
    lr, hr = pairs[0]
    assert lr.shape == (13, 18, 3) and hr.shape == (39, 54, 3)
    np.testing.assert_array_equal(hr, img[:39, :54])


def test_a_start_checks_each_entry_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_data checks (and builds) every entry; setup, next in the same process, takes the shapes it
    found instead of checking every file again (an 800-image start stats 4,800 files fewer)."""
    from pspl_lightning.data import FolderDataModule

    _images(tmp_path / "HR", n=4, shape=(40, 52))
    _images(tmp_path / "val", n=1, shape=(40, 52))
    dm = FolderDataModule(root=str(tmp_path), hr_dir="HR", val_hr_dir="val",
                          cache_dir=str(tmp_path / "cache"), patch_size=16, progress=False)
    checked: list[CacheItem] = []
    real = DecodedCache._check
    monkeypatch.setattr(DecodedCache, "_check", lambda self, item: checked.append(item) or real(self, item))
    dm.prepare_data()
    assert len(checked) == 2 * 5  # HR and LR of 5 images, once (what is built is indexed as written)
    checked.clear()
    dm.setup("fit")
    assert checked == []
    assert [(lr.shape, hr.shape) for lr, hr in dm.train_pairs] == [((20, 26, 3), (40, 52, 3))] * 4
    fresh = FolderDataModule(root=str(tmp_path), hr_dir="HR", val_hr_dir="val",
                             cache_dir=str(tmp_path / "cache"), patch_size=16, progress=False)
    fresh.setup("fit")  # a rank that did not prepare checks for itself, once
    assert len(checked) == 2 * 5
