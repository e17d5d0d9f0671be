"""Lightning DDP validation (ddp_spawn, gloo, CPU) with 3 images on 2 ranks: the default sampler pads to 4
(a duplicate image shifts the synced mean); ``UnrepeatedDistributedSampler`` gives the 1-process value."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from skimage import data as skdata
from torch import nn
from torch.utils.data import DataLoader

from pspl_lightning.archs import EDSR
from pspl_lightning.data.datasets import PairDataset
from pspl_lightning.data.sample import make_lr
from pspl_lightning.metrics import psnr_y, ssim_y
from pspl_lightning.module import SRModule

SCALE = 2


def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    hrs = [skdata.chelsea()[:96, :120], skdata.coffee()[:64, :96], skdata.astronaut()[:80, :80]]
    return [(make_lr(hr, SCALE), hr) for hr in hrs]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return EDSR(SCALE, n_resblocks=1, n_feats=8).eval()


class ValOnly(L.LightningDataModule):
    """Whole-image validation loaders built like ``PairedSRDataModule.val_dataloader``; ``unpadded=True``
    adds the sampler proposed for it (each image on exactly one rank)."""

    def __init__(self, unpadded: bool) -> None:
        super().__init__()
        self.unpadded = unpadded

    def val_dataloader(self) -> DataLoader:
        dataset = PairDataset(_pairs())
        sampler = None
        if self.unpadded and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(dataset, batch_size=1, shuffle=False, sampler=sampler)


def _validate_ddp(unpadded: bool, root: Path) -> dict[str, float]:
    module = SRModule(net=_net(), loss=nn.L1Loss(), scale=SCALE, val_set_names=["bench"])
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=str(root))
    return trainer.validate(module, datamodule=ValOnly(unpadded), verbose=False)[0]


@pytest.mark.slow
def test_lightning_ddp_validation_needs_the_unpadded_sampler(tmp_path: Path) -> None:
    net, psnrs, ssims = _net(), [], []
    with torch.no_grad():
        for lr, hr in _pairs():
            sr = net(torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255)
            hr_t = torch.from_numpy(hr.copy()).permute(2, 0, 1)[None]
            psnrs.append(psnr_y(sr, hr_t, SCALE).item())
            ssims.append(ssim_y(sr, hr_t, SCALE).item())
    assert max(psnrs) - min(psnrs) > 0.5

    # trainer.validate returns what self.log stored: float32, so ~1e-6 of the float64 value
    fixed = _validate_ddp(True, tmp_path)
    assert fixed["val/bench/psnr_y"] == pytest.approx(np.mean(psnrs), abs=1e-5)
    assert fixed["val/bench/ssim_y"] == pytest.approx(np.mean(ssims), abs=1e-6)
    padded = _validate_ddp(False, tmp_path)  # Lightning 2.6: DistributedSampler, image 0 seen twice
    assert padded["val/bench/psnr_y"] == pytest.approx(np.mean([*psnrs, psnrs[0]]), abs=1e-5)
    assert abs(padded["val/bench/psnr_y"] - np.mean(psnrs)) > 1e-2
