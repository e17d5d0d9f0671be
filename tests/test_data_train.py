"""``pspl-train data=div2k`` and ``data=folder`` train end to end from folders made here."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from pspl_lightning.cli.train import train
from pspl_lightning.data import DIV2KDataModule, FolderDataModule
from pspl_lightning.data.io import write_png
from pspl_lightning.data.synthetic import make_div2k_folder


@pytest.fixture(scope="module")
def div2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_div2k_folder(tmp_path_factory.mktemp("div2k"), range(1, 4), range(801, 803), size=(48, 64))


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    for i in range(2):
        write_png(root / "Set5" / "HR" / f"im{i}.png",
                  np.random.default_rng(i).integers(0, 256, (30, 34, 3), dtype=np.uint8))
    return root


def test_train_div2k(train_cfg, div2k: Path, benchmarks: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cfg = train_cfg("data=div2k", f"data.root={div2k}", f"data.cache_dir={cache}", "data.train_range=[1,3]",
                    "data.val_range=[801,802]", "data.num_workers=0", "data.val_sets=[div2k_val,set5]",
                    f"data.benchmark_root={benchmarks}", "data.progress=false")
    assert isinstance(instantiate(cfg.data), DIV2KDataModule)
    metrics = train(cfg)
    for key in ("val/psnr_y", "val/div2k_val/psnr_y", "val/set5/psnr_y", "val/set5/ssim_y"):
        assert math.isfinite(metrics[key]), key
    assert metrics["val/psnr_y"] == metrics["val/div2k_val/psnr_y"] != metrics["val/set5/psnr_y"]
    assert len(list(cache.glob("*.npy"))) == 3 * 2 + 2 * 2 + 2 * 2  # train, DIV2K val, Set5 (LR made)


def test_train_folder_with_workers(train_cfg, div2k: Path, tmp_path: Path) -> None:
    shutil.copytree(div2k / "DIV2K_valid_HR", tmp_path / "val")
    cfg = train_cfg("data=folder", f"data.hr_dir={div2k / 'DIV2K_train_HR'}",
                    f"data.val_hr_dir={tmp_path / 'val'}", f"data.cache_dir={tmp_path / 'cache'}",
                    "data.num_workers=2", "data.progress=false")
    assert isinstance(instantiate(cfg.data), FolderDataModule)
    metrics = train(cfg)
    assert math.isfinite(metrics["val/val/psnr_y"]) and metrics["val/psnr_y"] == metrics["val/val/psnr_y"]


def test_a_folder_smaller_than_a_batch_trains(train_cfg, div2k: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """3 images and the default batch of 16: data.repeat is raised to fill one step, and says so."""
    shutil.copytree(div2k / "DIV2K_valid_HR", tmp_path / "val")
    cfg = train_cfg("data=folder", f"data.hr_dir={div2k / 'DIV2K_train_HR'}",
                    f"data.val_hr_dir={tmp_path / 'val'}", "data.batch_size=16", "data.repeat=1",
                    "data.cache_dir=null", "data.num_workers=0",
                    "trainer.max_steps=2", "trainer.val_check_interval=2")
    with caplog.at_level("INFO", logger="pspl_lightning.data.datamodule"):
        metrics = train(cfg)
    assert metrics["global_step"] == 2 and math.isfinite(metrics["val/psnr_y"])
    assert "data.repeat raised from 1 to 6: 3 training images x 6 fill one step of 16 samples" in caplog.text
