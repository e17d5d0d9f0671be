"""The perceptual loss of ESRGAN / Real-ESRGAN: weighted distances between VGG19 features (before the ReLU)
of the SR and HR images, on ImageNet-normalised input (pure PyTorch)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pspl_lightning.errors import ConfigError
from pspl_lightning.vgg_weights import resolve_vgg19_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Real-ESRGAN's layers and weights (options/train_realesrgan_x4plus.yml)
REAL_ESRGAN_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
_VGG19_BLOCKS = (2, 2, 4, 4, 4)  # convolutions per block (torchvision's configuration "E")
CRITERIA = ("l1", "mse")


def vgg19_conv_indices() -> dict[str, int]:
    """``conv<block>_<n>`` -> its index in ``torchvision.models.vgg19().features`` (conv, ReLU, ..., pool)."""
    names, i = {}, 0
    for block, convs in enumerate(_VGG19_BLOCKS, start=1):
        for n in range(1, convs + 1):
            names[f"conv{block}_{n}"] = i
            i += 2  # the conv and its ReLU
        i += 1  # the max pool
    return names


def vgg19_features() -> nn.Sequential:
    """``torchvision.models.vgg19(weights=None).features``, built without the classifier (120M weights).

    Hand-written in torchvision's layer order (so its state dicts load): torchvision is an optional extra
    (``zoo``), and on the oldest supported stack (torch 2.13 CPU) it does not import at all."""
    layers: list[nn.Module] = []
    channels = 3
    for block, convs in enumerate(_VGG19_BLOCKS):
        width = 64 * 2 ** min(block, 3)  # 64, 128, 256, 512, 512
        for _ in range(convs):
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def load_vgg19_features(path: str | Path, last_index: int) -> nn.Sequential:
    """``vgg19().features[: last_index + 1]`` with the weights of ``path`` (a VGG19 state dict, as torchvision
    saves it, or its ``features.*`` part; the classifier is ignored), frozen, in eval mode; nothing is
    downloaded."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ConfigError(f"loss.perceptual.weights: {path} cannot be read as a state dict "
                          f"({type(exc).__name__})") from None
    if not isinstance(state, Mapping):
        raise ConfigError(f"loss.perceptual.weights: {path} holds a {type(state).__name__}, not a state dict")
    features = vgg19_features()
    try:
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                  if str(k).startswith("features.")}, strict=True)
    except RuntimeError as exc:
        text = " ".join(str(exc).split())[:300]
        raise ConfigError(f"loss.perceptual.weights: {path} is not a VGG19 state dict ({text})") from None
    features = features[: last_index + 1].eval()
    for p in features.parameters():
        p.requires_grad_(False)
    return features


class PerceptualLoss(nn.Module):
    """``weight * sum_l layer_weights[l] * criterion(VGG_l(norm(sr)), VGG_l(norm(hr)))`` (BasicSR's
    ``PerceptualLoss`` with ``use_input_norm=True``, ``range_norm=False``); images RGB in [0, 1].

    The VGG network is held outside the module's children, so its 20M weights stay out of ``state_dict``
    (and checkpoints) and out of ``parameters()``; ``.to()``/``.cuda()`` still move it. ``weights``: a VGG19
    state-dict file, or None for torchvision's cached ImageNet file (see :mod:`pspl_lightning.vgg_weights`).
    """

    def __init__(self, weights: str | None = None, layer_weights: Mapping[str, float] | None = None,
                 criterion: str = "l1", weight: float = 1.0, features: nn.Module | None = None) -> None:
        super().__init__()
        layer_weights = dict(REAL_ESRGAN_LAYERS if layer_weights is None else layer_weights)
        indices = vgg19_conv_indices()
        unknown = sorted(set(layer_weights) - set(indices))
        if unknown or not layer_weights:
            raise ConfigError(f"loss.perceptual.layer_weights names {unknown or 'no layer'}: expected VGG19 "
                              f"layers among {list(indices)}")
        if criterion not in CRITERIA:
            raise ConfigError(f"loss.perceptual.criterion={criterion!r} is not allowed: expected one of "
                              f"{list(CRITERIA)}")
        self.layer_weights = {k: float(v) for k, v in layer_weights.items()}
        self.indices = {k: indices[k] for k in self.layer_weights}
        self.criterion, self.weight = criterion, float(weight)
        if features is None:
            features = load_vgg19_features(resolve_vgg19_weights(weights), max(self.indices.values()))
        self._vgg = (features,)  # a tuple: not a child module (see the class docstring)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def vgg(self) -> nn.Module:
        """The frozen VGG19 feature layers."""
        return self._vgg[0]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> PerceptualLoss:
        super()._apply(fn, *args, **kwargs)
        self._vgg = (self._vgg[0]._apply(fn, *args, **kwargs),)
        return self

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """The chosen layers' outputs (before their ReLU) for ``x`` in [0, 1]."""
        wanted = {i: name for name, i in self.indices.items()}
        out: dict[str, Tensor] = {}
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.vgg):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h.clone()  # torchvision's next ReLU works in place
            if len(out) == len(wanted):
                break
        return out

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        f_sr, f_hr = self.features(sr), self.features(hr.detach())
        dist = F.l1_loss if self.criterion == "l1" else F.mse_loss
        total = sum(w * dist(f_sr[k], f_hr[k]) for k, w in self.layer_weights.items())
        return total * self.weight
