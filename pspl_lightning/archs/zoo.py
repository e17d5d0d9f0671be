"""The community zoo: spandrel's own architecture classes (not copies), any of its upscaling ids.

``spandrel_net(arch="SwinIR", scale=2, **kwargs)`` returns the spandrel class instance itself, so its
state dict has the community key names (what chaiNNer, traiNNer-redux and spandrel's loader read), with
the attributes every network of this project carries: ``scale``, ``scale_dependent`` (the state-dict
prefixes a warm start from another scale skips, found by building the class at the other scales and
comparing shapes) and ``arch`` (the name the config gives: spandrel's id, or the class name of one of an
id's classes, e.g. ``RealPLKSR`` under ``PLKSR``); ``spandrel_id`` is the id spandrel detects a file as.

Which ids upscale is read from spandrel itself: an id whose loader can report ``purpose="SR"``. The scale
goes to the class's own keyword (the first of :data:`SCALE_KEYWORDS` it takes); RealCUGAN has a class per
scale (``UpCunet2x`` ...). Keywords the class requires without a default get the community's values
(:data:`REQUIRED`), and classes whose default ``upsampler`` is ``''`` (restoration) get ``pixelshuffle``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import re
import sys
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from unittest import mock

import torch
from torch import nn

from pspl_lightning.archs.common import check_scale
from pspl_lightning.errors import ConfigError

SCALE_KEYWORDS = ("upscale", "upscale_factor", "up_scale", "upscaling_factor", "scale")
SCALES = (2, 3, 4)
# channel counts spandrel's classes take without a default (SPAN, MMRealSR): RGB in and out
_CHANNEL_ARGS = ("num_in_ch", "num_out_ch", "in_ch", "out_ch", "in_nc", "out_nc")
# keywords whose class default is missing, does not build, or gives a file spandrel reads otherwise: the
# community's value (SAFMN's official x2-x4 width; SwinIR's and Swin2SR's default window 7 does not divide
# their default img_size 64; spandrel's GRL loader assumes the official SR models' window and stripes,
# which a state dict does not hold)
REQUIRED: dict[str, dict[str, Any]] = {
    "SAFMN": {"dim": 36}, "SwinIR": {"window_size": 8}, "Swin2SR": {"window_size": 8},
    "GRL": {"window_size": 32, "stripe_size": [64, 64], "stripe_shift": True, "anchor_window_down_factor": 4},
}
# upscaling ids the zoo does not train, and why (one line each, at build time)
REFUSED: dict[str, str] = {
    "AuraSR": "a fixed-x4 GAN upsampler whose forward adds random noise and draws a random style on every "
              "call (its output is not a function of the input)",
    "IPT": "a multi-task transformer whose class takes only inputs of exactly its patch size in [0, 255] "
           "(spandrel runs it through a chopping wrapper, not the class's forward)",
}
_SR_PURPOSE = re.compile(r'purpose=(?:"Restoration" if [^\n]* else )?"SR"')


def _spandrel_module(arch_id: str) -> Any:
    try:
        return importlib.import_module(f"spandrel.architectures.{arch_id}")
    except ImportError as exc:
        raise ConfigError(f"model.arch={arch_id} needs spandrel ({exc}): pip install -e '.[zoo]'") from None


@functools.cache
def _registry() -> dict[str, Any]:
    """spandrel's registry: {id: Architecture instance}."""
    try:
        from spandrel import MAIN_REGISTRY
    except ImportError as exc:
        raise ConfigError(f"model=spandrel needs spandrel ({exc}): pip install -e '.[zoo]'") from None
    return {str(support.architecture.id): support.architecture for support in MAIN_REGISTRY.architectures()
            if type(support.architecture).__module__.startswith("spandrel.architectures.")}


def _classes(arch_id: str) -> tuple[type[nn.Module], ...]:
    """The class(es) spandrel's loader for ``arch_id`` builds (the type argument of its Architecture)."""
    base = type(_registry()[arch_id]).__orig_bases__[0]
    (arg,) = typing.get_args(base)
    return typing.get_args(arg) or (arg,)


@functools.cache
def upscaling_ids() -> tuple[str, ...]:
    """spandrel's ids whose loader can report ``purpose="SR"`` (sorted): the ones the zoo builds."""
    return tuple(sorted(arch_id for arch_id, arch in _registry().items()
                        if _SR_PURPOSE.search(inspect.getsource(type(arch).load))))


def _resolve(arch: str) -> tuple[str, tuple[type[nn.Module], ...]]:
    """(spandrel id, candidate classes) of ``arch``: an upscaling id, or a class name of one (RealPLKSR)."""
    ids = upscaling_ids()
    if arch in REFUSED:
        raise ConfigError(f"model.arch={arch} is not trained here: spandrel's {arch} is {REFUSED[arch]}")
    if arch in ids:
        return arch, _classes(arch)
    for arch_id in ids:
        named = tuple(c for c in _classes(arch_id) if c.__name__ == arch)
        if named:
            return arch_id, named
    known = _registry()
    if arch in known:
        raise ConfigError(f"model.arch={arch} does not upscale (spandrel's {arch} is a restoration network); "
                          f"the zoo trains the ones that do: {', '.join(ids)}")
    raise ConfigError(f"model.arch={arch!r} is not in the zoo: expected one of spandrel's upscaling ids "
                      f"{', '.join(ids)}")


def _keyword_params(cls: type[nn.Module]) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            and n != "self"}


def scale_keyword(arch: str) -> str | None:
    """The keyword of ``arch``'s class that takes the scale (None: a class per scale, RealCUGAN)."""
    _, classes = _resolve(arch)
    params = _keyword_params(classes[0])
    return next((k for k in SCALE_KEYWORDS if k in params), None)


def spandrel_class(arch: str, scale: int | None = None) -> type[nn.Module]:
    """The class ``model.arch=<arch>`` builds (at ``scale`` where the id has a class per scale)."""
    arch_id, classes = _resolve(arch)
    if len(classes) == 1 or scale_keyword(arch) is not None:
        return classes[0]
    per_scale = [c for c in classes if c.__name__.endswith(f"{scale}x")]
    if not per_scale:
        have = sorted(int(m.group(1)) for c in classes if (m := re.search(r"(\d)x$", c.__name__)))
        raise ConfigError(f"model.arch={arch} supports model.scale {', '.join(map(str, have))}, got {scale}")
    return per_scale[0]


def class_defaults(arch: str) -> dict[str, Any]:
    """What the zoo passes unless the config sets it: RGB channel counts where the class has no default,
    :data:`REQUIRED`, and ``upsampler="pixelshuffle"`` where the default is ``''`` (no upsampling)."""
    arch_id, classes = _resolve(arch)
    params = _keyword_params(classes[0])
    out: dict[str, Any] = {}
    for name, p in params.items():
        if name in REQUIRED.get(arch_id, {}):
            out[name] = REQUIRED[arch_id][name]
        elif p.default is inspect.Parameter.empty and name in _CHANNEL_ARGS:
            out[name] = 3
        elif name == "upsampler" and p.default == "":
            out[name] = "pixelshuffle"
    return out


def _scale_arguments(cls: type[nn.Module], keyword: str | None, scale: int) -> dict[str, Any]:
    if keyword is None:
        return {}
    default = _keyword_params(cls)[keyword].default
    return {keyword: [scale] if isinstance(default, Sequence) else scale}  # IPT takes a list of scales


@contextlib.contextmanager
def skip_weight_init() -> Iterator[None]:
    """Builds without filling weights (torch's and spandrel's random initialisers do nothing): for a build
    whose shapes alone matter; the fills are most of a transformer's build time."""
    def keep(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return tensor

    fills = {name: keep for name in ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_",
                                     "xavier_uniform_", "xavier_normal_", "trunc_normal_", "orthogonal_",
                                     "_no_grad_trunc_normal_") if hasattr(torch.nn.init, name)}
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.multiple(torch.nn.init, **fills))
        timm = sys.modules.get("spandrel.util.timm.__weight_init")
        if timm is not None:
            stack.enter_context(mock.patch.object(timm, "_no_grad_trunc_normal_", keep))
        yield


def _build(arch: str, cls: type[nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, NotImplementedError, IndexError,
            ZeroDivisionError, RuntimeError) as exc:
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise ConfigError(f"model.arch={arch} cannot be built with {args}: "
                          f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None


def _shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}


def scale_dependent_prefixes(arch: str, scale: int, kwargs: Mapping[str, Any],
                             shapes: dict[str, tuple[int, ...]]) -> tuple[str, ...]:
    """The module prefixes of the tensors (of a network at ``scale`` with ``shapes``) that are missing or
    shaped otherwise when the class is built with the same ``kwargs`` at another of :data:`SCALES`, and of
    the tensors only the other scales have: what a warm start from another scale's file cannot load."""
    moving: set[str] = set()
    keyword = scale_keyword(arch)
    for other in SCALES:
        if other == scale:
            continue
        try:
            cls = spandrel_class(arch, other)
            with skip_weight_init():
                other_net = cls(**_scale_arguments(cls, keyword, other), **kwargs)
        except Exception:  # noqa: BLE001 - a class that does not build at that scale has nothing to compare
            continue
        theirs = _shapes(other_net)
        moving |= {k for k, v in shapes.items() if theirs.get(k) != v}
        moving |= {k for k in theirs if k not in shapes}  # a file of that scale has them (x4: 2 stages)
    return tuple(sorted({k.rsplit(".", 1)[0] + "." for k in moving}))


def spandrel_net(arch: str, scale: int, **kwargs: Any) -> nn.Module:
    """spandrel's ``arch`` class at ``scale`` (2, 3 or 4) with the constructor arguments ``kwargs``.

    A keyword the class does not take, or one that sets the scale, is a :class:`ConfigError` naming it.
    """
    check_scale(scale, f"model.arch={arch}")
    cls = spandrel_class(arch, scale)
    keyword = scale_keyword(arch)
    accepted = list(_keyword_params(cls))
    if keyword is not None and keyword in kwargs:
        raise ConfigError(f"model.{keyword}: the scale of model.arch={arch} follows data.scale "
                          f"(model.scale); remove model.{keyword}")
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        allowed = [name for name in accepted if name != keyword]
        raise ConfigError(f"model.{unknown[0]} is not an argument of spandrel's {arch}: expected some of "
                          f"{allowed}")
    kwargs = {**class_defaults(arch), **{k: _plain(v) for k, v in kwargs.items()}}
    net = _build(arch, cls, {**_scale_arguments(cls, keyword, int(scale)), **kwargs})
    _refuse_zero_width(net, arch, kwargs)
    _check_output(net, arch, int(scale))
    net.arch, net.scale, net.spandrel_id = arch, int(scale), _resolve(arch)[0]
    net.scale_dependent = scale_dependent_prefixes(arch, int(scale), kwargs, _shapes(net))
    if net.spandrel_id == "SPAN":
        _reparameterized_convs(net)
    return net


def _refuse_zero_width(net: nn.Module, arch: str, kwargs: Mapping[str, Any]) -> None:
    """A layer with no channels (options whose ratios round a width down to 0) crashes at the first step
    with a shape error; refuse it at build time in one line, naming the layer."""
    for name, p in net.named_parameters():
        if p.dim() > 1 and 0 in p.shape:
            args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            raise ConfigError(f"model.arch={arch} with {args} has a layer of width zero ({name}: "
                              f"{tuple(p.shape)}): make the embedding wider or use fewer heads/splits")


PROBE_SIZES = (16, 24, 48)  # LR sides tried in turn: some classes need more (RealCUGAN 24, IPT its patch 48)


def _check_output(net: nn.Module, arch: str, scale: int) -> None:
    """One forward pass on a small blank input (eval mode, no gradient; the mode is restored): a class whose
    output is not one image of ``scale`` x the input's size is refused here in one line, not at step 1
    (SwiftSRGAN x3 gives x2; MMRealSR returns a tuple), and so is one that runs at none of the sizes."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = net.training
    net.eval()
    error: Exception | None = None
    try:
        for size in PROBE_SIZES:
            try:
                with torch.no_grad():
                    out = net(torch.zeros(1, 3, size, size, device=device))
            except Exception as exc:  # noqa: BLE001 - too small for the class: the next size
                error = exc
                continue
            if not isinstance(out, torch.Tensor):
                raise ConfigError(f"model.arch={arch}: spandrel's class returns {type(out).__name__}, not "
                                  f"one image; the zoo trains classes whose forward returns the image")
            if tuple(out.shape[-2:]) != (size * scale, size * scale):
                got = out.shape[-1] / size
                raise ConfigError(f"model.arch={arch} at model.scale={scale} turns a {size}x{size} input "
                                  f"into {out.shape[-1]}x{out.shape[-2]} (x{got:g}): this scale is not "
                                  f"supported")
            return
        sizes = ", ".join(map(str, PROBE_SIZES))
        raise ConfigError(f"model.arch={arch} at model.scale={scale} does not run on a {sizes} px input: "
                          f"{type(error).__name__}: {' '.join(str(error).split())[:200]}")
    finally:
        net.train(was_training)


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
            module.register_state_dict_pre_hook(_update_params)


def _update_params(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    module.update_params()
