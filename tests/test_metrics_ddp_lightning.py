"""Lightning DDP validation (ddp_spawn, gloo, CPU) with 3 images on 2 ranks: the project's DataModules shard
validation without padding (``use_distributed_sampler=False``, as ``configs/trainer/default.yaml`` sets) and
give the 1-process value; Lightning's default DistributedSampler would pad 3 images to 4 (a duplicate)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from skimage import data as skdata
from torch import nn
from torch.utils.data import DataLoader

from pspl_lightning.archs import EDSR
from pspl_lightning.data.datamodule import PairedSRDataModule
from pspl_lightning.data.datasets import PairDataset
from pspl_lightning.data.io import write_png
from pspl_lightning.imresize import make_lr
from pspl_lightning.metrics import psnr_y, ssim_y
from pspl_lightning.module import SRModule

SCALE = 2


def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    hrs = [skdata.chelsea()[:96, :120], skdata.coffee()[:64, :96], skdata.astronaut()[:80, :80]]
    return [(make_lr(hr, SCALE), hr) for hr in hrs]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return EDSR(SCALE, n_resblocks=1, n_feats=8).eval()


class ThreeImages(PairedSRDataModule):
    """The project's DataModule with 3 validation images written to ``folder``."""

    own_val_set = "bench"

    def __init__(self, folder: str) -> None:
        super().__init__(scale=SCALE, patch_size=32, progress=False)
        self.folder = Path(folder)

    def own_val_files(self) -> list[tuple[Path, Path]]:
        files = []
        for i, (lr, hr) in enumerate(_pairs()):
            files.append((self.folder / f"{i}x2.png", self.folder / f"{i}.png"))
            write_png(files[-1][0], lr)
            write_png(files[-1][1], hr)
        return files

    train_files = own_val_files


class PlainLoader(L.LightningDataModule):
    """A plain whole-image loader: under DDP Lightning swaps in a (padding) DistributedSampler."""

    def val_dataloader(self) -> DataLoader:
        return DataLoader(PairDataset(_pairs()), batch_size=1, shuffle=False)


def _validate_ddp(datamodule: L.LightningDataModule, root: Path, use_distributed_sampler: bool) -> dict:
    module = SRModule(net=_net(), loss=nn.L1Loss(), scale=SCALE, val_set_names=["bench"])
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=str(root), use_distributed_sampler=use_distributed_sampler)
    return trainer.validate(module, datamodule=datamodule, verbose=False)[0]


@pytest.mark.slow
def test_lightning_ddp_validation_gives_the_single_process_value(tmp_path: Path) -> None:
    net, psnrs, ssims = _net(), [], []
    with torch.no_grad():
        for lr, hr in _pairs():
            sr = net(torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255)
            hr_t = torch.from_numpy(hr.copy()).permute(2, 0, 1)[None]
            psnrs.append(psnr_y(sr, hr_t, SCALE).item())
            ssims.append(ssim_y(sr, hr_t, SCALE).item())
    assert max(psnrs) - min(psnrs) > 0.5

    # trainer.validate returns what self.log stored: float32, so ~1e-6 of the float64 value
    fixed = _validate_ddp(ThreeImages(str(tmp_path / "bench")), tmp_path, use_distributed_sampler=False)
    assert fixed["val/bench/psnr_y"] == pytest.approx(np.mean(psnrs), abs=1e-5)
    assert fixed["val/bench/ssim_y"] == pytest.approx(np.mean(ssims), abs=1e-6)
    padded = _validate_ddp(PlainLoader(), tmp_path, use_distributed_sampler=True)  # image 0 seen twice
    assert padded["val/bench/psnr_y"] == pytest.approx(np.mean([*psnrs, psnrs[0]]), abs=1e-5)
    assert abs(padded["val/bench/psnr_y"] - np.mean(psnrs)) > 1e-2
