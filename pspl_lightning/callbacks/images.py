"""A panel of LR / SR / HR crops and a paced loss's weight map, logged every N steps on rank 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from matplotlib import colormaps

from pspl_lightning.callbacks.pace import step_weights
from pspl_lightning.metrics.functional import to_uint8


def heat_map(weights: torch.Tensor, max_weight: float) -> np.ndarray:
    """Mean-over-channels weight map (H x W) as an inferno-coloured H x W x 3 uint8 image, 0..max_weight."""
    norm = (weights.float().mean(dim=0) / max_weight).clamp(0, 1).cpu().numpy()
    return (colormaps["inferno"](norm)[..., :3] * 255).round().astype(np.uint8)


def to_hwc_uint8(img: torch.Tensor) -> np.ndarray:
    """C x H x W float in [0, 1] -> H x W x C uint8 (as a saved PNG)."""
    return to_uint8(img.detach()).permute(1, 2, 0).cpu().numpy()


class ImagePanelLogger(Callback):
    """Every ``every_n_steps`` optimizer steps, rank 0 logs rows of [LR (nearest-upscaled), SR, HR, weights].

    Goes to every logger that takes images (W&B ``log_image``, TensorBoard ``add_image``); with
    ``save_dir`` set the panels are also written there as PNG. With a paced loss (e.g. PSPL) the weight-map
    column shows which pixels the pace favours at that step (bright = weight near the loss's
    ``max_weight``, 1 for a loss without one).
    """

    def __init__(self, every_n_steps: int = 1000, num_images: int = 4, save_dir: str | None = None) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.image_panel.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps, self.num_images = every_n_steps, num_images
        self.save_dir = Path(save_dir) if save_dir else None
        self._logged_step: int | None = None

    @torch.no_grad()
    def panel(self, pl_module: L.LightningModule, batch: Any,
              weights: torch.Tensor | None = None) -> tuple[np.ndarray, str]:
        """The image grid for the first ``num_images`` samples of ``batch`` (with the step's paced-loss
        ``weights`` when given), and its caption."""
        lr, hr = pl_module.to_float(batch)
        lr, hr = lr[: self.num_images], hr[: self.num_images]
        was_training = pl_module.training
        pl_module.eval()
        sr = pl_module.net(lr).float()
        pl_module.train(was_training)
        lr_up = F.interpolate(lr, size=hr.shape[-2:], mode="nearest")
        max_weight = getattr(pl_module.loss, "max_weight", 1.0)
        rows = []
        for i in range(lr.shape[0]):
            cols = [to_hwc_uint8(lr_up[i]), to_hwc_uint8(sr[i]), to_hwc_uint8(hr[i])]
            if weights is not None and weights.shape[0] > i:
                cols.append(heat_map(weights[i], max_weight))
            rows.append(np.concatenate(cols, axis=1))
        caption = "LR | SR | HR | weight" if weights is not None else "LR | SR | HR"
        return np.concatenate(rows, axis=0), caption

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every_n_steps != 0 or step == self._logged_step:
            return  # (with gradient accumulation several batches end at one step)
        self._logged_step = step
        image, caption = self.panel(pl_module, batch, step_weights(outputs))
        for lg in trainer.loggers:
            if hasattr(lg, "log_image"):
                lg.log_image(key="train/panel", images=[image], caption=[caption], step=step)
            elif hasattr(getattr(lg, "experiment", None), "add_image"):
                lg.experiment.add_image("train/panel", image, step, dataformats="HWC")
        if self.save_dir is not None:
            from PIL import Image

            self.save_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(self.save_dir / f"panel_step{step:07d}.png")
