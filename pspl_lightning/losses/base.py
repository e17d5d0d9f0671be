"""The Charbonnier penalty, and the names of the base losses PSPL can weight (L1, MSE, Charbonnier)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Mean Charbonnier penalty ``sqrt(d^2 + eps^2)``, a differentiable L1."""
    return torch.sqrt((pred - target).square() + eps * eps).mean()


BASE_LOSSES = ("l1", "mse", "charbonnier")  # what PSPLLoss(base=...) weights


class CharbonnierLoss(nn.Module):
    """Charbonnier loss as a module, for ``loss=charbonnier`` without PSPL."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return charbonnier(pred, target, self.eps)
