"""LPIPS for ``pspl-eval`` (``metrics.lpips=true``): torchmetrics' LPIPS where its backbone's ImageNet
weights are in torch's hub cache (nothing is downloaded), scored on the same SR images as PSNR/SSIM."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pspl_lightning.data.pairs import load_pair
from pspl_lightning.errors import ConfigError
from pspl_lightning.vgg_weights import hub_dir

log = logging.getLogger("pspl_lightning")

# torchmetrics' LPIPS backbones and torchvision's ImageNet file each one loads from the hub cache
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                  "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def lpips_weights_missing(net: str) -> str | None:
    """None when LPIPS(``net``) can be built without a download, else the one line that says why not."""
    if net not in BACKBONE_FILES:
        raise ConfigError(f"metrics.lpips_net={net!r} is not allowed: expected one of {list(BACKBONE_FILES)}")
    try:  # torchmetrics builds the backbone with torchvision, an optional extra
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError) as exc:  # (beside torch 2.13 CPU it fails on its operators)
        return (f"metrics.lpips=true: LPIPS skipped, it needs torchvision, which does not import here "
                f"({type(exc).__name__}; pip install 'pspl-lightning[zoo]'); PSNR/SSIM as usual")
    path = hub_dir() / "checkpoints" / BACKBONE_FILES[net]
    if path.is_file():
        return None
    return (f"metrics.lpips=true: LPIPS skipped, torchvision's {net} ImageNet weights are not in torch's hub "
            f"cache ({path}; the machine has to fetch them once); PSNR/SSIM as usual")


def lpips_metric(net: str, device: torch.device | str = "cpu") -> Callable[[Tensor, Tensor], Tensor]:
    """``metric(sr, hr)`` -> LPIPS of two 1 x 3 x H x W images in [0, 1] (lower is closer)."""
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    lpips = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True).to(device)

    def metric(sr: Tensor, hr: Tensor) -> Tensor:
        lpips.reset()
        with torch.no_grad():
            lpips.update(sr.clamp(0, 1), hr)
            return lpips.compute()

    return metric


class LPIPSRecorder:
    """Wraps an upscaler: each call (one image of ``files``, in order) also scores LPIPS of its SR against
    that image's HR (read as PSNR/SSIM read it); ``scores`` holds (image, LPIPS)."""

    def __init__(self, upscaler: Any, files: Sequence[tuple[Path | None, Path]],
                 metric: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.upscaler, self.files, self.metric = upscaler, list(files), metric
        self.scale = upscaler.scale
        self.scores: list[tuple[str, float]] = []

    def __call__(self, lr: Tensor) -> Tensor:
        sr = self.upscaler(lr)
        lr_path, hr_path = self.files[len(self.scores)]
        hr = load_pair(lr_path, hr_path, self.scale)[1]
        hr_t = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)[None].float().div(255)
        hr_t = hr_t.to(sr.device)
        sr_q = sr.clamp(0, 1).mul(255).round().div(255)  # the 8-bit SR that PSNR/SSIM score
        self.scores.append((hr_path.stem, float(self.metric(sr_q, hr_t))))
        return sr

    def mean(self) -> float:
        return math.fsum(v for _, v in self.scores) / len(self.scores) if self.scores else math.nan
