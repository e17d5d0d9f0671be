"""Real layouts, as a new user brings them (#29): nested folders (LSDIR), two files of one name, images
smaller than the patch (a wide, short image beside a square one tells the shorter side from the area), and
preparing at scale: every core, progress, interrupted and continued."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.progress import MofNCompleteColumn, TimeRemainingColumn

from pspl_lightning.cli.data import main as data_main
from pspl_lightning.data import FolderDataModule
from pspl_lightning.data.cache import CacheInterrupted, CacheItem, DecodedCache
from pspl_lightning.data.io import unique_names, write_png
from pspl_lightning.data.layouts import div2k_files, folder_pairs
from pspl_lightning.data.progress import RateColumn, image_progress
from pspl_lightning.errors import DataError
from pspl_lightning.launch.devices import cpu_cores


def _img(h: int, w: int, value: int) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """LSDIR-like: ``HR/0001000/0000001.png`` ...; a square 64x64 and a wide, short 300x40 (larger area:
    12,000 against 4,096 pixels) image; and a flat one."""
    hr = tmp_path / "HR"
    write_png(hr / "0001000" / "0000001.png", _img(64, 64, 10))
    write_png(hr / "0001000" / "0000002.png", _img(40, 300, 20))
    write_png(hr / "0002000" / "deep" / "0000003.png", _img(72, 80, 30))
    write_png(hr / "top.png", _img(64, 70, 40))
    return hr


def test_folders_are_walked_and_images_named_by_their_relative_path(nested: Path, tmp_path: Path) -> None:
    lr = tmp_path / "LR" / "X2"
    for name, (h, w) in {"0001000/0000001": (32, 32), "0001000/0000002": (20, 150),
                         "0002000/deep/0000003": (36, 40), "top": (32, 35)}.items():
        write_png(lr / f"{name}x2.png", _img(h, w, 0))
    pairs = folder_pairs(nested, tmp_path / "LR", 2, "hr_dir")
    rel = [(p[0].relative_to(lr).as_posix(), p[1].relative_to(nested).as_posix()) for p in pairs]
    assert rel == [("0001000/0000001x2.png", "0001000/0000001.png"), ("0001000/0000002x2.png",
                                                                      "0001000/0000002.png"),
                   ("0002000/deep/0000003x2.png", "0002000/deep/0000003.png"), ("topx2.png", "top.png")]


def test_two_files_of_one_name_are_refused_in_one_line(nested: Path, capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    write_png(nested / "top.jpg", _img(64, 70, 40))
    message = (f"data.hr_dir={nested}: top.jpg and top.png share the name 'top' (the extension is not part "
               f"of an image's name); rename or remove one of them")
    with pytest.raises(DataError) as exc:
        folder_pairs(nested, None, 2, "hr_dir")
    assert str(exc.value) == message
    assert unique_names([nested / "a" / "x.png", nested / "b" / "x.png"], nested, "k") == ["a/x", "b/x"]
    with pytest.raises(SystemExit) as exit_:
        data_main(["optimize", f"input={nested}", f"output={tmp_path / 'lit'}"])
    assert exit_.value.code == 2 and not (tmp_path / "lit").exists()
    assert capsys.readouterr().err.strip() == message.replace("data.hr_dir=", "input=")


@pytest.mark.parametrize("cache", [True, False])
def test_training_skips_images_whose_shorter_side_is_below_the_patch(
        nested: Path, tmp_path: Path, cache: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Patch 48 at x2: the wide 300x40 image is skipped (shorter side 40), the square 64x64 one (less
    area) is kept; one line for it and the count, and training goes on with 3 images."""
    dm = FolderDataModule(hr_dir=str(nested), scale=2, patch_size=48, batch_size=2, val_sets=["val"],
                          val_hr_dir=str(nested), progress=False,
                          cache_dir=str(tmp_path / "cache") if cache else None)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.train_pairs) == 3 and sorted(lr.shape[:2] for lr, _ in dm.train_pairs) == [
        (32, 32), (32, 35), (36, 40)]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"skipped {nested / '0001000' / '0000002.png'} (300x40, WxH): its x2 LR is below the LR "
                     f"patch of 24 pixels",
                     "skipped 1 of 4 training images smaller than the LR patch of 24 pixels"]
    lr, hr = next(iter(dm.train_dataloader()))
    assert lr.shape == (2, 3, 24, 24) and hr.shape == (2, 3, 48, 48)
    assert len(dm.val_pairs["val"]) == 4  # validation keeps every image (whole images, no patch)


def test_prepare_walks_subfolders_skips_small_images_and_takes_workers(
        nested: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        data_main(["prepare", "data=folder", f"data.root={tmp_path}", "data.hr_dir=HR", "data.val_sets=[val]",
                   "data.val_hr_dir=HR", f"data.cache_dir={tmp_path / 'cache'}", "data.patch_size=48",
                   "data.progress=false", "workers=1"])
    assert "FolderDataModule: 3 training images, validation sets val (4)" in capsys.readouterr().out
    assert "skipped 1 of 4 training images smaller than the LR patch of 24 pixels" in caplog.messages
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2 * 4  # HR and MATLAB-bicubic LR of each
    with pytest.raises(SystemExit) as exc:
        data_main(["prepare", "data=folder", f"data.root={tmp_path}", "workers=0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == ("Invalid configuration: workers=0 is not allowed: expected an "
                                               "integer >= 1")


def test_optimize_walks_subfolders_and_skips_short_sides(nested: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """min_size=50: the wide 300x40 image is skipped, the 64x64 one kept; names are relative paths."""
    import litdata

    data_main(["optimize", f"input={nested}", f"output={tmp_path / 'lit'}", "workers=1", "min_size=50"])
    out, err = capsys.readouterr()
    assert err.strip() == (f"pspl-data: skipped {nested / '0001000' / '0000002.png'} (300x40, WxH): shorter "
                           f"side below min_size=50")
    assert "wrote 3 images (uint8, " in out and "; skipped 1 smaller than min_size=50" in out
    ds = litdata.StreamingDataset(str(tmp_path / "lit"))
    assert sorted(ds[i]["name"] for i in range(len(ds))) == ["0001000/0000001", "0002000/deep/0000003", "top"]


def test_an_interrupted_cache_build_keeps_what_it_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Ctrl-C during the third image: one line saying what is kept; the next run builds only the rest (the
    one worker thread may finish the fourth before the pool stops: it is kept too)."""
    sources = []
    for i in range(4):
        sources.append(tmp_path / f"{i}.png")
        write_png(sources[-1], _img(8, 8, i))
    cache = DecodedCache(tmp_path / "cache")
    build = DecodedCache._build_source
    calls: list[Path] = []

    def interrupt_third(self: DecodedCache, source: Path, items: list[CacheItem]) -> None:
        calls.append(source)
        if len(calls) == 3:
            raise KeyboardInterrupt
        build(self, source, items)

    monkeypatch.setattr(DecodedCache, "_build_source", interrupt_third)
    items = [CacheItem(s) for s in sources]
    with pytest.raises(CacheInterrupted) as exc:
        cache.ensure(items, workers=1, progress=False)
    assert str(exc.value) == (f"interrupted after 2 of 4 images; the decoded cache {tmp_path / 'cache'} "
                              f"keeps them: run the same command again to build the other 2")
    kept = [it for it in items if cache.cached_shape(it) is not None]
    assert sources[:2] == [it.source for it in kept][:2] and sources[2] not in [it.source for it in kept]
    monkeypatch.setattr(DecodedCache, "_build_source", build)
    assert cache.ensure(items, workers=1, progress=False) == 4 - len(kept)
    assert all(cache.cached_shape(it) == (8, 8, 3) for it in items)


def test_the_progress_bar_shows_images_done_rate_and_time_left() -> None:
    kinds = {type(c) for c in image_progress(disable=True).columns}
    assert {MofNCompleteColumn, RateColumn, TimeRemainingColumn} <= kinds
    task = SimpleNamespace(speed=None, finished_speed=None)
    assert RateColumn().render(task).plain == ""  # no rate before the first image
    task.speed = 2.0
    assert RateColumn().render(task).plain == "2.00 images/s"


def test_loader_workers_default_to_the_cores(tmp_path: Path) -> None:
    dm = FolderDataModule(hr_dir=str(tmp_path), num_workers=None, val_sets=["val"])
    assert dm.num_workers == min(4, cpu_cores())


def test_a_missing_lr_folder_is_noted_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_png(tmp_path / "DIV2K_train_HR" / "0001.png", _img(8, 8, 1))
    with caplog.at_level(logging.INFO, logger="pspl_lightning.data.layouts"):
        for _ in range(3):  # prepare_data, setup and the validation sets each list the files
            div2k_files(tmp_path, "train", range(1, 2), 2, "train_range")
    assert sum("LR_bicubic/X2 not found" in m for m in caplog.messages) == 1


def test_optimize_min_size_defaults_to_the_patch_of_the_x2_configs() -> None:
    from pspl_lightning.cli.data import _train_config
    from pspl_lightning.data.optimize import DEFAULT_MIN_SIZE

    assert DEFAULT_MIN_SIZE == 96 == _train_config(["data=stream"]).data.patch_size
