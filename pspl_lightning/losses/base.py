"""Pixel losses PSPL can weight: mean L1, mean squared error and Charbonnier."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error."""
    return (pred - target).abs().mean()


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error."""
    return (pred - target).square().mean()


def charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Mean Charbonnier penalty ``sqrt(d^2 + eps^2)``, a differentiable L1."""
    return torch.sqrt((pred - target).square() + eps * eps).mean()


BASE_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": l1, "mse": mse, "charbonnier": charbonnier}


class CharbonnierLoss(nn.Module):
    """Charbonnier loss as a module, for ``loss=charbonnier`` without PSPL."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return charbonnier(pred, target, self.eps)
