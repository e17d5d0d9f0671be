"""Losses: the PSPL weighting, its SSIM map and the base pixel losses (pure PyTorch)."""

from pspl_lightning.losses.base import BASE_LOSSES, CharbonnierLoss, charbonnier, l1, mse
from pspl_lightning.losses.pspl import PSPLLoss, check_pace, pace_sigma
from pspl_lightning.losses.ssim import ssim_map

__all__ = ["BASE_LOSSES", "CharbonnierLoss", "PSPLLoss", "charbonnier", "check_pace", "l1", "mse",
           "pace_sigma", "ssim_map"]
