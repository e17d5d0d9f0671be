"""The README's headline numbers are the ones recorded with the measurement they come from."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch

from pspl_lightning.data.io import read_image
from pspl_lightning.data.sample import SAMPLE_VAL, sample_pairs
from pspl_lightning.imresize import imresize
from pspl_lightning.metrics import PSNR

ROOT = Path(__file__).resolve().parents[1]


def test_make_train_figure_is_the_recorded_cpu_run() -> None:
    """README's `make train` result is the CPU figure gpu_check.py compares a GPU run with."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"Final validation at step 200: val/psnr_y = ([0-9.]+)", readme)
    assert shown is not None and float(shown.group(1)) == gpu_check.CPU_SAMPLE_PSNR
    assert f"{gpu_check.CPU_SAMPLE_PSNR} dB" in (ROOT / "docs" / "BENCHMARKS.md").read_text()


def test_bicubic_figure_of_the_sample_validation_images(sample_root: Path) -> None:
    """README's and DECISIONS.md's "32.92 dB for bicubic": the MATLAB bicubic x2 upscale (uint8, as
    MATLAB's imresize) of each held-out LR image against its HR image (cropped to 2 x the LR size), scored
    as the validation loop scores SR (``PSNR(crop_border=scale)`` on Y, the mean over the 2 images)."""
    scale = 2  # configs/data/sample.yaml's default
    metric = PSNR(crop_border=scale)
    pairs = sample_pairs(sample_root, "val", scale)
    assert len(pairs) == len(SAMPLE_VAL) == 2
    for lr_path, hr_path in pairs:
        lr, hr = read_image(lr_path), read_image(hr_path)
        sr = imresize(lr, scale)
        hr = hr[: scale * lr.shape[0], : scale * lr.shape[1]]
        assert sr.dtype == np.uint8 and sr.shape == hr.shape
        metric.update(*(torch.from_numpy(a).permute(2, 0, 1)[None] for a in (sr, hr)))
    figure = f"{metric.compute().item():.2f}"
    assert figure == "32.92"
    assert f"against {figure} dB for bicubic" in (ROOT / "README.md").read_text().replace("\n", " ")
    assert f"32.63 vs {figure} dB" in (ROOT / "docs" / "DECISIONS.md").read_text()
