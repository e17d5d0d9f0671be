"""What the evaluation and upscaling entry points share: the errors they report, the network asked for."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from pspl_lightning.data.io import ImageReadError
from pspl_lightning.inference.loading import WeightsError

USER_ERRORS = (WeightsError, FileNotFoundError, FileExistsError, ImageReadError, ValueError)


def asked_model(cfg: DictConfig) -> dict[str, Any] | None:
    """The ``model`` group chosen on the command line (without its scale), or None."""
    if cfg.get("model") is None:
        return None
    model = OmegaConf.to_container(cfg.model, resolve=False)
    model.pop("scale", None)  # the scale is checked on its own (and may interpolate a missing data.scale)
    return model
