"""Losses: the paced-loss contract, the PSPL weighting, its SSIM map and the base pixel losses (pure
PyTorch)."""

from pspl_lightning.losses.base import BASE_LOSSES, CharbonnierLoss, charbonnier
from pspl_lightning.losses.paced import PacedLoss
from pspl_lightning.losses.pspl import PSPLLoss
from pspl_lightning.losses.ssim import ssim_map
from pspl_lightning.pace import check_pace, pace_sigma

__all__ = ["BASE_LOSSES", "CharbonnierLoss", "PSPLLoss", "PacedLoss", "charbonnier", "check_pace",
           "pace_sigma", "ssim_map"]
