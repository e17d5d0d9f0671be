"""The community zoo: spandrel's own architecture classes (not copies), built from ``configs/model/*.yaml``.

``spandrel_net(arch="SwinIR", scale=2, **kwargs)`` returns the spandrel class instance itself, so its
state dict has the community key names (what chaiNNer, traiNNer-redux and spandrel's loader read), with
the attributes every network of this project carries: ``scale`` and ``scale_dependent`` (the state-dict
prefixes a warm start from another scale skips), and ``arch`` (spandrel's id, which names the network in
configs and exports, where the class may be named otherwise: ESRGAN's is ``RRDBNet``), the module name
under ``spandrel.architectures``; ``scale`` goes to the class's own keyword (``upscale``, ``scale``, ...).
Where padding to a window multiple happens for each architecture: docs/ZOO.md (every class here pads in
its own ``forward`` or needs none, so nothing is wrapped).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from pspl_lightning.archs.common import check_scale
from pspl_lightning.errors import ConfigError


def _last_child(attr: str) -> Callable[[nn.Module], tuple[str, ...]]:
    """The prefix of the last layer of the sequence ``attr`` (whose output width is out_ch * scale^2)."""
    return lambda net: (f"{attr}.{len(getattr(net, attr)) - 1}.",)


def _after_trunk(net: nn.Module) -> tuple[str, ...]:
    """ESRGAN's flat ``model`` sequence: the upsampling stages and the HR convs after them (their indices
    move with the number of x2 stages), i.e. everything after ``model.0`` (conv) and ``model.1`` (trunk)."""
    return tuple(f"model.{i}." for i in range(2, len(net.model)))


@dataclass(frozen=True)
class ZooArch:
    """How the factory builds one spandrel architecture: the keyword that takes the scale, and the
    scale-dependent state-dict prefixes of a built network."""

    scale_keyword: str
    scale_dependent: Callable[[nn.Module], tuple[str, ...]]


ZOO: dict[str, ZooArch] = {
    "Compact": ZooArch("upscale", _last_child("body")),
    "ESRGAN": ZooArch("scale", _after_trunk),
    "SPAN": ZooArch("upscale", lambda net: ("upsampler.",)),
    "SwinIR": ZooArch("upscale", lambda net: ("upsample.",)),
    "HAT": ZooArch("upscale", lambda net: ("upsample.",)),
    "DAT": ZooArch("upscale", lambda net: ("upsample.",)),
    "OmniSR": ZooArch("up_scale", lambda net: ("up.",)),
    "PLKSR": ZooArch("upscaling_factor", _last_child("feats")),
}


def spandrel_class(arch: str) -> type[nn.Module]:
    """``spandrel.architectures.<arch>.<arch>``; a name outside the zoo or a missing spandrel is a
    :class:`ConfigError`."""
    if arch not in ZOO:
        raise ConfigError(f"model.arch={arch!r} is not in the zoo: expected one of {sorted(ZOO)}")
    try:
        module = importlib.import_module(f"spandrel.architectures.{arch}")
    except ImportError as exc:
        raise ConfigError(f"model.arch={arch} needs spandrel ({exc}): pip install -e '.[zoo]'") from None
    return getattr(module, arch)


def spandrel_net(arch: str, scale: int, **kwargs: Any) -> nn.Module:
    """spandrel's ``arch`` class at ``scale`` (2, 3 or 4) with the constructor arguments ``kwargs``.

    A keyword the class does not take, or one that sets the scale, is a :class:`ConfigError` naming it.
    """
    cls = spandrel_class(arch)
    spec = ZOO[arch]
    check_scale(scale, f"model.arch={arch}")
    accepted = [name for name, p in inspect.signature(cls.__init__).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if spec.scale_keyword in kwargs:
        raise ConfigError(f"model.{spec.scale_keyword}: the scale of model.arch={arch} follows data.scale "
                          f"(model.scale); remove model.{spec.scale_keyword}")
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        allowed = [name for name in accepted if name != spec.scale_keyword]
        raise ConfigError(f"model.{unknown[0]} is not an argument of spandrel's {arch}: expected some of "
                          f"{allowed}")
    kwargs = {k: _plain(v) for k, v in kwargs.items()}
    try:
        net = cls(**{spec.scale_keyword: int(scale)}, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, NotImplementedError) as exc:
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise ConfigError(f"model.arch={arch} cannot be built with {args}: "
                          f"{type(exc).__name__}: {exc}") from None
    net.arch, net.scale = arch, int(scale)
    net.scale_dependent = spec.scale_dependent(net)
    if arch == "SPAN":
        _reparameterized_convs(net)
    return net


def _plain(value: Any) -> Any:
    """Config lists (OmegaConf's ``ListConfig``) as plain lists: spandrel records its arguments in
    ``net.hyperparameters`` (the metadata of an export) and some classes do numpy arithmetic on them."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _reparameterized_convs(net: nn.Module) -> None:
    """SPAN's ``eval_conv`` of every ``Conv3XC`` is the sum of its training branches (structural
    re-parameterisation), recomputed by spandrel at each eval-mode forward. Here it takes no gradient (it
    is not used in training mode), and every ``state_dict()`` (checkpoints, EMA, export) recomputes it
    first, so a file saved after training steps holds the eval weights the trained branches give."""
    for module in net.modules():
        if hasattr(module, "eval_conv") and hasattr(module, "update_params"):
            for p in module.eval_conv.parameters():
                p.requires_grad_(False)
            module.register_state_dict_pre_hook(lambda m, prefix, keep_vars: m.update_params())
