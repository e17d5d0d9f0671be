"""DDP in the default suite: 2 gloo ranks (ddp_spawn) train a tiny network through the project's DataModule
and validation sampler; sigma and the LR agree on every rank, and the synced PSNR/SSIM over 3 validation
images (2 on rank 0, 1 plus an unscored pad on rank 1) equal the single-process values; with
``on_nonfinite=skip``, a NaN loss on one rank makes every rank skip that batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from pspl_lightning.cli.train import train
from pspl_lightning.data.io import read_image, write_png
from pspl_lightning.metrics import psnr_y, ssim_y
from pspl_lightning.module import SRModule
from tests.helpers.checkpoints import network_from_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _three_val_images(sample_root: Path, folder: Path) -> Path:
    """3 HR validation images of different content and size (their LR made with MATLAB bicubic)."""
    crops = {"chelsea": (slice(0, 120), slice(0, 160)), "coffee": (slice(100, 196), slice(200, 328)),
             "astronaut": (slice(0, 80), slice(160, 264))}
    for name, (rows, cols) in crops.items():
        split = "train" if name == "astronaut" else "val"
        write_png(folder / f"{name}.png", read_image(sample_root / split / "HR" / f"{name}.png")[rows, cols])
    return folder


def _ranks(probe_dir: Path) -> dict[int, list[dict]]:
    return {int(p.stem[4:]): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(probe_dir.glob("rank*.jsonl"))}


def test_ddp_spawn_two_ranks_agree_and_validate_like_one_process(train_cfg, sample_root: Path,
                                                                 tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    val_dir = _three_val_images(sample_root, tmp_path / "val_HR")
    cfg = train_cfg("trainer=ddp_cpu", "trainer.strategy=ddp_spawn", "trainer.max_steps=4",
                    "trainer.val_check_interval=4", "optimizer.lr=1e-4", "schedule.lr_milestones=[2]",
                    "data=folder", f"data.hr_dir={sample_root}/train/HR",
                    f"data.lr_dir={sample_root}/train/LR_bicubic", f"data.val_hr_dir={val_dir}",
                    "data.patch_size=32", "data.batch_size=4", "data.repeat=2", "data.num_workers=0",
                    "data.progress=false", "+callbacks.probe._target_=tests.helpers.probes.RankProbe",
                    f"+callbacks.probe.out_dir={probe}", "on_nonfinite=skip",
                    "loss._target_=tests.helpers.probes.PSPLNaNOnRank", "+loss.nan_rank=1",
                    "+loss.nan_call=2", "+callbacks.skips._target_=tests.helpers.probes.SkipProbe",
                    f"+callbacks.skips.out_dir={probe}")
    metrics = train(cfg)

    # rank 1's loss at step 2 is NaN: both ranks skip that batch (a rank skipping alone would desync DDP)
    skips = {r: [json.loads(line) for line in (probe / f"skips{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)}
    assert skips[0] == skips[1] == [{"step": s + 1, "skipped": s == 2} for s in range(4)]

    ranks = _ranks(probe)
    assert sorted(ranks) == [0, 1]
    assert ranks[0] == ranks[1]  # identical sigma and learning rate at every step on every rank
    assert [r["step"] for r in ranks[0]] == [0, 1, 2, 3]
    assert [r["world"] for r in ranks[0]] == [2] * 4
    assert [r["lr"] for r in ranks[0]] == pytest.approx([1e-4, 1e-4, 5e-5, 5e-5])
    assert [r["sigma"] for r in ranks[0]] == pytest.approx([(g + 1) / 10 for g in range(4)])
    assert metrics["global_step"] == 4

    # one process, the final weights, the same DataModule: every image scored once
    net = network_from_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("validate")
    psnrs, ssims = [], []
    with torch.no_grad():
        for lr, hr in dm.val_dataloader()[0]:
            sr = net(SRModule.to_float((lr,))[0]).float()
            psnrs.append(psnr_y(sr, hr, 2).item())
            ssims.append(ssim_y(sr, hr, 2).item())
    assert len(psnrs) == 3 and max(psnrs) - min(psnrs) > 0.5  # a duplicated or lost image would show
    assert metrics["val/psnr_y"] == pytest.approx(np.mean(psnrs), abs=1e-9)
    assert metrics["val/ssim_y"] == pytest.approx(np.mean(ssims), abs=1e-9)
