"""EDSR-PyTorch's official EDSR and RCAN files (https://github.com/sanghyun-son/EDSR-PyTorch) as the project's
networks, and back.

Those networks work on [0, 255] (``rgb_range`` 255) with the DIV2K mean shift; the project's on [0, 1].
Every EDSR layer is a convolution, ReLU, sum or pixel shuffle, so dividing every bias by the range gives a
network whose output on ``x / 255`` is the official output / 255, exactly. RCAN's channel attention (a
sigmoid) is not scale-free: its first 1x1 conv takes the range into its weight instead, also exact. The
key names differ only in ``head.0`` (``head`` here) and RCAN's ``conv_du`` (``excite`` here).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pspl_lightning.archs.common import DIV2K_RGB_MEAN

StateDict = dict[str, Any]

OFFICIAL_RGB_RANGE = 255.0


def official_rgb_range(state: StateDict) -> float:
    """The ``rgb_range`` an EDSR-PyTorch file was trained with, read from its mean shift (255 if absent)."""
    bias = state.get("sub_mean.bias")
    if bias is None:
        return OFFICIAL_RGB_RANGE
    return float(round(-float(bias[0]) / DIV2K_RGB_MEAN[0], 3))


def _renamed(state: StateDict, head: tuple[str, str], inner: tuple[str, str] | None = None
             ) -> dict[str, Tensor]:
    """Keys with the prefix ``head[0]`` replaced by ``head[1]`` and the part ``inner[0]`` by ``inner[1]``."""
    out = {}
    for key, value in state.items():
        if key.startswith(head[0]):
            key = head[1] + key[len(head[0]):]
        if inner is not None:
            key = key.replace(*inner)
        out[key] = value
    return out


def edsr_from_official(state: StateDict) -> dict[str, Tensor]:
    """EDSR-PyTorch's EDSR state dict as the project's EDSR on [0, 1]: ``head.0`` -> ``head``,
    biases / range."""
    rgb_range = official_rgb_range(state)
    state = _renamed(state, ("head.0.", "head."))
    return {k: v / rgb_range if k.endswith(".bias") else v for k, v in state.items()}


def rcan_from_official(state: StateDict) -> dict[str, Tensor]:
    """EDSR-PyTorch's RCAN state dict as the project's RCAN on [0, 1] (same output / range, exactly up to
    rounding): biases / range except the attention's, the attention's first 1x1 conv weight x range."""
    rgb_range = official_rgb_range(state)
    state = _renamed(state, ("head.0.", "head."), (".conv_du.", ".excite."))
    out = {}
    for key, value in state.items():
        if ".excite.0.weight" in key:
            value = value * rgb_range
        elif key.endswith(".bias") and ".excite." not in key:
            value = value / rgb_range
        out[key] = value
    return out


def rcan_to_official(state: StateDict, rgb_range: float = OFFICIAL_RGB_RANGE) -> dict[str, Tensor]:
    """The inverse of :func:`rcan_from_official`: the project's RCAN as EDSR-PyTorch's (spandrel reads it)."""
    out = {}
    for key, value in state.items():
        if ".excite.0.weight" in key:
            value = value / rgb_range
        elif key.endswith(".bias") and ".excite." not in key:
            value = value * rgb_range
        out[key] = value
    return _renamed(out, ("head.", "head.0."), (".excite.", ".conv_du."))


def rcan_convertible(hyperparameters: dict[str, Any]) -> bool:
    """Whether spandrel's RCAN with these hyper-parameters is one the project's RCAN reproduces."""
    hp = hyperparameters
    return (hp.get("norm", True) and not hp.get("unshuffle_mod", False) and hp.get("kernel_size", 3) == 3
            and hp.get("act_mode", "relu") == "relu" and hp.get("n_colors", 3) == 3)


