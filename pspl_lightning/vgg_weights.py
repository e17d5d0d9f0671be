"""Where the perceptual loss's VGG19 weights come from, decided without importing torch (``pspl-train``
checks it before the heavy imports): ``loss.perceptual.weights`` or torchvision's file in torch's hub cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from pspl_lightning.errors import ConfigError

# torchvision's VGG19_Weights.IMAGENET1K_V1 (https://download.pytorch.org/models/vgg19-dcbb9e9d.pth)
VGG19_FILE = "vgg19-dcbb9e9d.pth"


def hub_dir() -> Path:
    """torch's hub folder as ``torch.hub.get_dir()`` finds it: $TORCH_HOME/hub, else
    $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "torch")
    return Path(os.path.expanduser(torch_home)) / "hub"


def cached_vgg19() -> Path:
    """Where torchvision keeps the VGG19 ImageNet weights it downloaded."""
    return hub_dir() / "checkpoints" / VGG19_FILE


def resolve_vgg19_weights(weights: str | os.PathLike[str] | None,
                          key: str = "loss.perceptual.weights") -> Path:
    """The VGG19 state-dict file to use: ``weights`` when given (it must exist), else torchvision's cached
    file; :class:`ConfigError` naming both ways otherwise. Nothing is downloaded."""
    if weights is not None and str(weights) != "":
        path = Path(os.path.expanduser(str(weights)))
        if not path.is_file():
            raise ConfigError(f"{key}={weights}: no such file (expected a VGG19 state dict, e.g. "
                              f"torchvision's {VGG19_FILE})")
        return path
    cached = cached_vgg19()
    if cached.is_file():
        return cached
    raise ConfigError(
        f"the perceptual loss needs VGG19 ImageNet weights: none in torch's hub cache ({cached}); put "
        f"torchvision's {VGG19_FILE} there (torchvision.models.vgg19(weights='IMAGENET1K_V1') fetches it on "
        f"a machine with internet) or pass {key}=<VGG19 state dict file>")
