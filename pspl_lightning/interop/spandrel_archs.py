"""spandrel support for the project's EDSR and RDN (spandrel 0.4 has neither).

EDSR is detected under two namings: the project's (``head.weight``; RGB in [0, 1]) and EDSR-PyTorch's
official one (``head.0.weight``, [0, 255] inside), converted exactly by
:mod:`pspl_lightning.interop.edsr_pytorch`. Importing this module imports spandrel.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import torch
from spandrel import MAIN_REGISTRY, Architecture, ArchSupport, ImageModelDescriptor, StateDict
from spandrel.util import KeyCondition, get_pixelshuffle_params, get_seq_len
from torch import Tensor, nn

from pspl_lightning.archs import EDSR, RDN
from pspl_lightning.interop.edsr_pytorch import edsr_from_official

PAPER_EDSR = (256, 32)  # (n_feats, n_resblocks) of the paper's EDSR, the one trained with res_scale 0.1


def _descriptor(arch: Architecture, model: nn.Module, state: StateDict, scale: int,
                hyperparameters: dict[str, Any], tags: list[str]) -> ImageModelDescriptor:
    model.hyperparameters = hyperparameters  # what spandrel's own classes record (store_hyperparameters)
    return ImageModelDescriptor(model, state, architecture=arch, purpose="SR", tags=tags, supports_half=True,
                                supports_bfloat16=True, scale=scale, input_channels=3, output_channels=3)


class EDSRArch(Architecture[EDSR]):
    """The project's EDSR (``pspl_lightning.archs.EDSR``), from its own or EDSR-PyTorch's naming."""

    def __init__(self) -> None:
        body = ("sub_mean.weight", "add_mean.weight", "body.0.body.0.weight", "body.0.body.2.weight",
                "tail.0.0.weight", "tail.1.weight")
        super().__init__(id="EDSR", detect=KeyCondition.has_any(KeyCondition.has_all("head.weight", *body),
                                                                KeyCondition.has_all("head.0.weight", *body)))

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[EDSR]:
        state = edsr_from_official(state_dict) if "head.0.weight" in state_dict else dict(state_dict)
        n_feats, n_colors = state["head.weight"].shape[:2]
        n_resblocks = get_seq_len(state, "body") - 1
        scale, _ = get_pixelshuffle_params(state, "tail.0", n_feats)
        # not in the weights: EDSR-PyTorch's rule (0.1 for the paper's EDSR, 1 for every other width)
        res_scale = 0.1 if (n_feats, n_resblocks) == PAPER_EDSR else 1.0
        hp = {"n_resblocks": n_resblocks, "n_feats": n_feats, "res_scale": res_scale}
        model = EDSR(scale, n_colors=n_colors, **hp)
        return _descriptor(self, model, state, scale, hp, [f"{n_feats}nf", f"{n_resblocks}nb"])


class RDNArch(Architecture[RDN]):
    """The project's RDN (``pspl_lightning.archs.RDN``); every hyper-parameter is read from the shapes."""

    def __init__(self) -> None:
        super().__init__(id="RDN", detect=KeyCondition.has_all(
            "sfe1.weight", "sfe2.weight", "blocks.0.layers.0.conv.0.weight", "blocks.0.fuse.weight",
            "gff.0.weight", "gff.1.weight", "tail.0.0.weight", "tail.1.weight"))

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[RDN]:
        n_feats, n_colors = state_dict["sfe1.weight"].shape[:2]
        growth = state_dict["blocks.0.layers.0.conv.0.weight"].shape[0]
        first = state_dict["tail.0.0.weight"].shape[0] // growth  # s^2 of the first pixel-shuffle stage
        scale = 4 if "tail.0.2.weight" in state_dict else int(round(first**0.5))
        hp = {"n_feats": n_feats, "n_blocks": get_seq_len(state_dict, "blocks"),
              "n_layers": get_seq_len(state_dict, "blocks.0.layers"), "growth": growth}
        model = RDN(scale, n_colors=n_colors, **hp)
        return _descriptor(self, model, state_dict, scale, hp, [f"{n_feats}nf", f"{hp['n_blocks']}nb"])


PROJECT_ARCHS = (EDSRArch, RDNArch)


def register() -> None:
    """Add the project's EDSR and RDN to spandrel's ``MAIN_REGISTRY`` (once; later calls do nothing)."""
    MAIN_REGISTRY.add(*(ArchSupport.from_architecture(arch()) for arch in PROJECT_ARCHS),
                      ignore_duplicates=True)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def hyperparameters(model: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a spandrel-built network that differ from the class defaults
    (JSON values only: the others are defaults such as RCAN's ``conv`` function)."""
    recorded = getattr(model, "hyperparameters", None) or {}
    if type(model).__module__.startswith("pspl_lightning."):
        return dict(recorded)  # the project's classes: every structural option, as their configs list them
    defaults = {name: p.default for name, p in inspect.signature(type(model).__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    out = {}
    for name, value in recorded.items():
        value = list(value) if isinstance(value, tuple) else value
        default = defaults.get(name, object())
        default = list(default) if isinstance(default, tuple) else default
        if _jsonable(value) and (name not in defaults or default != value):
            out[name] = value
    return out


def as_tensor_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict, detached, on the CPU and contiguous (what safetensors requires)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
            if isinstance(v, torch.Tensor)}
