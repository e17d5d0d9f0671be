"""What the evaluation and upscaling entry points share: the network a command line asks for."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def asked_model(cfg: DictConfig) -> dict[str, Any] | None:
    """The ``model`` group chosen on the command line (without its scale), or None."""
    if cfg.get("model") is None:
        return None
    model = OmegaConf.to_container(cfg.model, resolve=False)
    model.pop("scale", None)  # the scale is checked on its own (and may interpolate a missing data.scale)
    return model
