"""torchmetrics wrappers of the benchmark PSNR/SSIM: sum and count states, exact under DDP sync."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from pspl_lightning.metrics import functional as FM


class _MeanOfPerImage(Metric):
    """Mean of a per-image score; states are a float64 sum and an image count (summed across ranks)."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, crop_border: int = 0, y_channel: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.crop_border, self.y_channel = crop_border, y_channel
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _score(self, sr: Tensor, hr: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, sr: Tensor, hr: Tensor) -> None:
        scores = self._score(sr, hr)
        self.total += scores.sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.total.device)
        return self.total / self.count


class PSNR(_MeanOfPerImage):
    """Mean per-image PSNR (dB) under the benchmark protocol (Y channel by default)."""

    def _score(self, sr: Tensor, hr: Tensor) -> Tensor:
        return FM.psnr(sr, hr, self.crop_border, self.y_channel)


class SSIM(_MeanOfPerImage):
    """Mean per-image SSIM under the benchmark protocol (Y channel by default)."""

    def _score(self, sr: Tensor, hr: Tensor) -> Tensor:
        return FM.ssim(sr, hr, self.crop_border, self.y_channel)
