"""``.safetensors`` / ``.pth`` export: the state dict in the architecture's community naming, with metadata.

The tensors are contiguous, on the CPU and without wrapper prefixes; the zoo's are spandrel's own key names,
EDSR and RDN keep the project's (spandrel reads them once ``pspl_lightning`` is imported), and the project's
RCAN is written in EDSR-PyTorch's naming, which spandrel's RCAN reads. The metadata (architecture, scale,
model config, hyper-parameters, run id, EMA or raw weights) lets ``pspl-eval``/``pspl-upscale``/``init_from``
rebuild the network without detection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pspl_lightning.archs import RCAN
from pspl_lightning.errors import ConfigError
from pspl_lightning.inference.loading import (
    EDSR_PYTORCH_NAMING,
    FORMAT,
    LoadedNetwork,
    network_name,
)


def community_state(loaded: LoadedNetwork) -> tuple[dict[str, Tensor], str]:
    """(contiguous CPU state dict, naming) of the loaded network as the community names it."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in loaded.net.state_dict().items()}
    if type(loaded.net) is RCAN:
        from pspl_lightning.interop.edsr_pytorch import rcan_to_official

        return {k: v.contiguous() for k, v in rcan_to_official(state).items()}, EDSR_PYTORCH_NAMING
    own = type(loaded.net).__module__.startswith("pspl_lightning.")
    return state, "pspl-lightning" if own else "spandrel"


def metadata(loaded: LoadedNetwork, naming: str, half: bool = False) -> dict[str, Any]:
    """What the file records besides the tensors (JSON values)."""
    info = loaded.info or {}
    hyper = {k: v for k, v in loaded.model_config.items()
             if not k.startswith("_") and k not in ("arch", "scale")}
    return {"format": FORMAT, "architecture": network_name(loaded.model_config), "scale": loaded.scale,
            "model": loaded.model_config, "hyperparameters": hyper, "run_id": info.get("run_id"),
            "weights": info.get("weights", "as stored"), "naming": naming,
            "input": "RGB, NCHW, float in [0, 1]", "precision": "fp16" if half else "fp32"}


def write_weights(loaded: LoadedNetwork, out: Path, half: bool = False) -> dict[str, Any]:
    """Write ``out`` (``.safetensors`` or ``.pth``; fp16 floating-point tensors if ``half``); return the
    metadata written. The caller writes to a temporary name and checks it before renaming
    (:func:`pspl_lightning.export.staged`)."""
    state, naming = community_state(loaded)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = metadata(loaded, naming, half)
    if out.suffix == ".safetensors":
        try:
            from safetensors.torch import save_file
        except ImportError:
            raise ConfigError("output=*.safetensors needs the optional package: pip install safetensors; "
                              "or write a .pth file") from None
        text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items() if v is not None}
        save_file(state, str(out), metadata=text)
    else:  # spandrel and BasicSR-style readers unwrap "state_dict"; torch.load(weights_only=True) reads it
        payload = {"format": FORMAT, "state_dict": state, "model": loaded.model_config, "scale": loaded.scale,
                   "metadata": meta}
        torch.save(payload, out)
    return meta
