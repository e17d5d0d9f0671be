"""The network of a ``pspl-train`` checkpoint, rebuilt by hand: independent of pspl_lightning.inference."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import nn


def network_from_checkpoint(ckpt: str | Path, net: nn.Module | None = None) -> nn.Module:
    """``net`` (default: built from the checkpoint's own model config, which records its scale) with the
    checkpoint's ``net.*`` weights loaded strictly, in eval mode."""
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    if net is None:
        net = instantiate(stored["pspl_config"]["model"])
    net.load_state_dict({k.removeprefix("net."): v for k, v in stored["state_dict"].items()
                         if k.startswith("net.")})
    return net.eval()
