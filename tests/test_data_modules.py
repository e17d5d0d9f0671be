"""DIV2K, folder and benchmark DataModules: layouts, index ranges, cache vs in-memory, validation sets, and
every bad input with its message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pspl_lightning.data import DIV2KDataModule, FolderDataModule, SampleDataModule
from pspl_lightning.data.benchmarks import benchmark_files
from pspl_lightning.data.io import ImageReadError, read_image, write_png
from pspl_lightning.data.pairs import load_pair
from pspl_lightning.data.synthetic import make_div2k_folder
from pspl_lightning.imresize import make_lr

SMALL = dict(patch_size=16, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def div2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train 0001-0004 with X2 LR, valid 0801-0802 HR only (their LR is made by MATLAB bicubic)."""
    root = make_div2k_folder(tmp_path_factory.mktemp("div2k"), range(1, 5), range(801, 803), size=(48, 62))
    shutil.rmtree(root / "DIV2K_valid_LR_bicubic")
    return root


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Set5 as HR images only; Set14 with HR/ and LR_bicubic/X2/ as distributed."""
    root = tmp_path_factory.mktemp("benchmarks")
    rng = np.random.default_rng(5)
    for i in range(2):
        write_png(root / "Set5" / f"img{i}.png", rng.integers(0, 256, (33, 27, 3), dtype=np.uint8))
    hr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    write_png(root / "Set14" / "HR" / "zebra.png", hr)
    write_png(root / "Set14" / "LR_bicubic" / "X2" / "zebrax2.png", np.zeros((10, 12, 3), np.uint8))
    return root


def test_div2k_cached(div2k: Path, tmp_path: Path) -> None:
    dm = DIV2KDataModule(root=str(div2k), train_range=[2, 4], val_range=[801, 802],
                         cache_dir=str(tmp_path / "cache"), **SMALL)
    assert dm.val_set_names == ["div2k_val"]
    files = dm.train_files()
    assert [hr.name for _, hr in files] == ["0002.png", "0003.png", "0004.png"]
    assert [lr.name for lr, _ in files] == ["0002x2.png", "0003x2.png", "0004x2.png"]
    assert [lr for lr, _ in dm.own_val_files()] == [None, None]
    dm.prepare_data()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3 * 2 + 2 * 2
    dm.setup("fit")
    lr, hr = next(iter(dm.train_dataloader()))
    assert lr.shape == (2, 3, 8, 8) and hr.shape == (2, 3, 16, 16) and lr.dtype == torch.uint8
    (val,) = dm.val_dataloader()
    vlr, vhr = next(iter(val))
    expected_hr = read_image(div2k / "DIV2K_valid_HR" / "0801.png")
    assert torch.equal(vhr[0], torch.from_numpy(expected_hr).permute(2, 0, 1))
    assert torch.equal(vlr[0], torch.from_numpy(make_lr(expected_hr, 2)).permute(2, 0, 1))


def test_cache_and_memory_give_the_same_pairs(div2k: Path, tmp_path: Path) -> None:
    kw = dict(root=str(div2k), train_range=[1, 2], val_range=[801, 802], **SMALL)
    cached = DIV2KDataModule(cache_dir=str(tmp_path / "c"), **kw)
    memory = DIV2KDataModule(cache_dir=None, **kw)
    for dm in (cached, memory):
        dm.prepare_data()
        dm.setup()
    for (a_lr, a_hr), (b_lr, b_hr) in zip(cached.train_pairs, memory.train_pairs, strict=True):
        np.testing.assert_array_equal(a_lr, b_lr)
        np.testing.assert_array_equal(a_hr, b_hr)
    np.testing.assert_array_equal(cached.val_pairs["div2k_val"][1][0], memory.val_pairs["div2k_val"][1][0])


def test_setup_without_prepare_builds_the_cache(div2k: Path, tmp_path: Path) -> None:
    dm = DIV2KDataModule(root=str(div2k), train_range=[1, 1], val_range=[801, 801],
                         cache_dir=str(tmp_path / "c"), **SMALL)
    dm.setup("fit")
    assert len(dm.train_pairs) == 1 and len(dm.val_pairs["div2k_val"]) == 1


def test_benchmark_val_sets(div2k: Path, benchmarks: Path, tmp_path: Path) -> None:
    dm = DIV2KDataModule(root=str(div2k), train_range=[1, 2], val_range=[801, 801],
                         val_sets=["set14", "div2k_val", "set5"], benchmark_root=str(benchmarks),
                         cache_dir=str(tmp_path / "c"), **SMALL)
    assert dm.val_set_names == ["set14", "div2k_val", "set5"]
    dm.prepare_data()
    dm.setup("validate")
    loaders = dm.val_dataloader()
    assert [len(dl) for dl in loaders] == [1, 1, 2]
    lr, hr = next(iter(loaders[0]))  # Set14: the distributed LR is used as is
    assert lr.shape == (1, 3, 10, 12) and int(lr.max()) == 0 and hr.shape == (1, 3, 20, 24)
    lr, hr = next(iter(loaders[2]))  # Set5: HR only, 27 x 33 cropped to 26 x 32, LR by MATLAB bicubic
    img0 = read_image(benchmarks / "Set5" / "img0.png")
    assert torch.equal(hr[0], torch.from_numpy(img0[:32, :26]).permute(2, 0, 1))
    assert torch.equal(lr[0], torch.from_numpy(make_lr(img0, 2)).permute(2, 0, 1))


def test_benchmark_pair_without_lr_is_made_by_matlab_bicubic(benchmarks: Path) -> None:
    files = benchmark_files(benchmarks / "Set5", 3)
    assert [hr.stem for _, hr in files] == ["img0", "img1"] and files[0][0] is None
    lr, hr = load_pair(*files[0], 3)
    assert lr.shape == (11, 9, 3) and hr.shape == (33, 27, 3)
    np.testing.assert_array_equal(lr, make_lr(read_image(benchmarks / "Set5" / "img0.png"), 3))


def test_folder_module_makes_lr_and_validates_on_benchmarks(benchmarks: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = {f"p{i}": rng.integers(0, 256, (37, 41, 3), dtype=np.uint8) for i in range(3)}
    for name, img in imgs.items():
        write_png(tmp_path / "hr" / f"{name}.png", img)
    dm = FolderDataModule(hr_dir=str(tmp_path / "hr"), val_sets=["set5"], benchmark_root=str(benchmarks),
                          cache_dir=None, scale=4, **SMALL)
    dm.setup("fit")
    lr, hr = dm.train_pairs[2]
    np.testing.assert_array_equal(lr, make_lr(imgs["p2"], 4))
    np.testing.assert_array_equal(hr, imgs["p2"][:36, :40])
    assert list(dm.val_pairs) == ["set5"]


def test_folder_module_with_lr_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name, lr_name in (("a", "ax2"), ("b", "b")):  # <stem>x2.png and <stem>.png are both accepted
        write_png(tmp_path / "hr" / f"{name}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        lr = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        write_png(tmp_path / "lr" / "X2" / f"{lr_name}.png", lr)
    dm = FolderDataModule(hr_dir=str(tmp_path / "hr"), lr_dir=str(tmp_path / "lr"),
                          val_hr_dir=str(tmp_path / "hr"), val_lr_dir=str(tmp_path / "lr"), **SMALL)
    assert [(lr.name, hr.name) for lr, hr in dm.train_files()] == [("ax2.png", "a.png"), ("b.png", "b.png")]
    assert dm.val_set_names == ["val"] and len(dm.val_files()["val"]) == 2


def test_sample_module_keeps_working(sample_root: Path) -> None:
    dm = SampleDataModule(root=str(sample_root), patch_size=32, batch_size=2, progress=False)
    assert dm.val_set_names == ["sample"]
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_pairs) == 6 and len(dm.val_pairs["sample"]) == 2


# --- bad input -------------------------------------------------------------------------------------------

def test_missing_root_shows_the_layout(tmp_path: Path) -> None:
    dm = DIV2KDataModule(root=str(tmp_path / "nowhere"), **SMALL)
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere does not exist.*DIV2K_train_HR/0001\.png"):
        dm.prepare_data()


def test_missing_split_folder_shows_the_layout(div2k: Path, tmp_path: Path) -> None:
    shutil.copytree(div2k / "DIV2K_train_HR", tmp_path / "DIV2K_train_HR")
    dm = DIV2KDataModule(root=str(tmp_path), train_range=[1, 4], **SMALL)
    assert len(dm.train_files()) == 4  # the LR folder is optional
    layout = r"(?s)DIV2K_valid_HR does not exist.*DIV2K_valid_HR/0801\.png"
    with pytest.raises(FileNotFoundError, match=layout):
        dm.own_val_files()


def test_missing_image_of_the_range(div2k: Path) -> None:
    dm = DIV2KDataModule(root=str(div2k), train_range=[1, 800], **SMALL)
    with pytest.raises(FileNotFoundError, match=r"0005\.png not found \(image 5 of data.train_range 1-800\)"):
        dm.train_files()


def test_missing_lr_file_when_lr_folder_exists(div2k: Path, tmp_path: Path) -> None:
    shutil.copytree(div2k, tmp_path / "d", dirs_exist_ok=True)
    (tmp_path / "d" / "DIV2K_train_LR_bicubic" / "X2" / "0003x2.png").unlink()
    dm = DIV2KDataModule(root=str(tmp_path / "d"), train_range=[1, 4], **SMALL)
    with pytest.raises(FileNotFoundError, match=r"0003x2\.png not found although .*X2 exists"):
        dm.train_files()


@pytest.mark.parametrize("value", [[0, 5], [5, 4], [1]])
def test_bad_index_range(div2k: Path, value: list[int]) -> None:
    with pytest.raises(ValueError, match=r"data.train_range must be \[first, last\]"):
        DIV2KDataModule(root=str(div2k), train_range=value, **SMALL)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "notes.txt").write_text("not an image")
    dm = FolderDataModule(hr_dir=str(tmp_path / "hr"), **SMALL)
    with pytest.raises(FileNotFoundError, match=r"data.hr_dir .*hr holds no images"):
        dm.train_files()
    with pytest.raises(FileNotFoundError, match=r"data.hr_dir .*missing does not exist"):
        FolderDataModule(hr_dir=str(tmp_path / "missing"), **SMALL).train_files()


def test_truncated_image_names_the_file(div2k: Path, tmp_path: Path) -> None:
    shutil.copytree(div2k, tmp_path / "d", dirs_exist_ok=True)
    bad = tmp_path / "d" / "DIV2K_train_HR" / "0002.png"
    bad.write_bytes(bad.read_bytes()[:500])
    for cache_dir in (str(tmp_path / "cache"), None):
        dm = DIV2KDataModule(root=str(tmp_path / "d"), train_range=[1, 2], val_range=[801, 802],
                             cache_dir=cache_dir, **SMALL)
        with pytest.raises(ImageReadError, match=r"DIV2K_train_HR/0002\.png: cannot decode image"):
            dm.prepare_data()
            dm.setup("fit")


def test_lr_hr_size_mismatch(tmp_path: Path) -> None:
    write_png(tmp_path / "hr" / "a.png", np.zeros((40, 40, 3), np.uint8))
    write_png(tmp_path / "lr" / "a.png", np.zeros((16, 20, 3), np.uint8))
    for cache_dir in (str(tmp_path / "cache"), None):
        dm = FolderDataModule(hr_dir=str(tmp_path / "hr"), lr_dir=str(tmp_path / "lr"), val_sets=["x"],
                              benchmark_root=str(tmp_path), cache_dir=cache_dir, **SMALL)
        with pytest.raises(ValueError, match=r"lr/a\.png is 20x16 \(WxH\), so .*hr/a\.png should be 40x32"):
            dm.setup("fit")


def test_missing_lr_for_an_hr_image(tmp_path: Path) -> None:
    write_png(tmp_path / "hr" / "a.png", np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "lr").mkdir()
    dm = FolderDataModule(hr_dir=str(tmp_path / "hr"), lr_dir=str(tmp_path / "lr"), **SMALL)
    with pytest.raises(FileNotFoundError, match=r"no LR image for .*a\.png .*expected ax2\.<ext>"):
        dm.train_files()


def test_image_smaller_than_the_patch(div2k: Path, tmp_path: Path) -> None:
    for cache_dir in (str(tmp_path / "cache"), None):
        dm = DIV2KDataModule(root=str(div2k), train_range=[1, 1], cache_dir=cache_dir,
                             patch_size=64, batch_size=2, progress=False)
        message = r"0001x2\.png is 31x24 \(WxH\): smaller than the LR patch of 32"
        with pytest.raises(ValueError, match=message):
            dm.setup("fit")


def test_validation_set_errors(div2k: Path, benchmarks: Path) -> None:
    with pytest.raises(ValueError, match="set data.benchmark_root"):
        DIV2KDataModule(root=str(div2k), val_sets=["set5"], benchmark_root=None, **SMALL).val_files()
    with pytest.raises(FileNotFoundError, match="benchmark set 'urban100' not found"):
        DIV2KDataModule(root=str(div2k), val_sets=["urban100"], benchmark_root=str(benchmarks),
                        **SMALL).val_files()
    with pytest.raises(ValueError, match="data.val_sets is empty"):
        DIV2KDataModule(root=str(div2k), val_sets=[], **SMALL)
    with pytest.raises(ValueError, match="lists a set twice"):
        DIV2KDataModule(root=str(div2k), val_sets=["set5", "set5"], **SMALL)
    with pytest.raises(ValueError, match="data.val_hr_dir is not set"):
        FolderDataModule(hr_dir=str(div2k), **SMALL).val_files()
