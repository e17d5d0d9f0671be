"""Community weights files: the architecture, hyper-parameters and scale of a bare state dict, from spandrel.

spandrel detects an architecture from the state dict's key pattern alone (42 architectures, plus the
project's EDSR and RDN registered by :mod:`pspl_lightning.interop.spandrel_archs`). EDSR-PyTorch's RCAN
files come back as the project's RCAN (an exact conversion), so fine-tuning them with ``model=rcan`` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from pspl_lightning.errors import CheckpointError

ZOO_FACTORY = "pspl_lightning.archs.zoo.spandrel_net"


@dataclass
class Detected:
    """A network spandrel recognised, its weights loaded; ``model`` is a config that names it."""

    net: nn.Module
    model: dict[str, Any]
    scale: int
    architecture: str


def spandrel_available() -> bool:
    """Whether spandrel (and torchvision, which its import needs) can be imported."""
    try:
        import spandrel  # noqa: F401
    except ImportError:
        return False
    return True


def _zoo_scale_keyword(arch_id: str) -> str | None:
    """The scale keyword of an upscaling spandrel id the zoo builds (None: not one, or spandrel absent)."""
    try:
        from pspl_lightning.archs.zoo import scale_keyword, upscaling_ids
    except ImportError:
        return None
    try:
        return scale_keyword(arch_id) if arch_id in upscaling_ids() else None
    except Exception:  # noqa: BLE001 - spandrel missing or unreadable: not a zoo network
        return None


def model_config(net: nn.Module, arch_id: str) -> dict[str, Any]:
    """A config naming ``net``: ``pspl_lightning.archs.<Class>`` for the project's classes, the zoo factory
    (``arch=<id>``) for the zoo's, else spandrel's class path; hyper-parameters that differ from defaults."""
    from pspl_lightning.interop.spandrel_archs import hyperparameters

    hp = hyperparameters(net)
    cls = type(net)
    if cls.__module__.startswith("pspl_lightning."):
        return {"_target_": f"pspl_lightning.archs.{cls.__name__}", **hp}
    scale_keyword = _zoo_scale_keyword(arch_id)
    if scale_keyword is not None:
        kwargs = {k: v for k, v in hp.items() if k != scale_keyword}
        from pspl_lightning.archs.zoo import spandrel_class

        # an id with several classes (PLKSR: PLKSR, RealPLKSR) is named by the class it built
        arch = arch_id if spandrel_class(arch_id) is cls else cls.__name__
        return {"_target_": ZOO_FACTORY, "arch": arch, **kwargs}
    return {"_target_": f"{cls.__module__}.{cls.__name__}", **hp}


def detect(state: dict[str, Tensor]) -> Detected | None:
    """The network of a bare state dict as spandrel detects it (None: spandrel is absent or does not
    recognise it). Raises :class:`CheckpointError` when spandrel recognises the keys but cannot load them."""
    if not spandrel_available():
        return None
    from spandrel import MAIN_REGISTRY, UnsupportedModelError

    from pspl_lightning.interop.spandrel_archs import register

    register()
    try:
        desc = MAIN_REGISTRY.load(dict(state))
    except UnsupportedModelError:
        return None
    except Exception as exc:  # spandrel raises whatever its loader hits (KeyError, RuntimeError, ...)
        text = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"spandrel recognises the keys but cannot load them ({type(exc).__name__}: "
                              f"{text})") from None
    arch_id, net = str(desc.architecture.id), desc.model
    if arch_id == "RCAN":
        converted = _project_rcan(net, int(desc.scale))
        if converted is not None:
            net = converted
    return Detected(net=net, model=model_config(net, arch_id), scale=int(desc.scale),
                    architecture=desc.architecture.name)


def _project_rcan(official: nn.Module, scale: int) -> nn.Module | None:
    """spandrel's RCAN (EDSR-PyTorch's naming, [0, 255] inside) as the project's RCAN, when it is one."""
    from pspl_lightning.archs import RCAN
    from pspl_lightning.interop.edsr_pytorch import rcan_convertible, rcan_from_official

    hp = getattr(official, "hyperparameters", {})
    if not rcan_convertible(hp) or scale not in (2, 3, 4):
        return None
    state = rcan_from_official(official.state_dict())
    n_feats = state["head.weight"].shape[0]
    net = RCAN(scale, n_resgroups=hp["n_resgroups"], n_resblocks=hp["n_resblocks"], n_feats=n_feats,
               reduction=hp["reduction"], res_scale=float(hp.get("res_scale", 1.0)))
    net.load_state_dict(state)
    net.hyperparameters = {"n_resgroups": hp["n_resgroups"], "n_resblocks": hp["n_resblocks"],
                           "n_feats": n_feats, "reduction": hp["reduction"],
                           "res_scale": float(hp.get("res_scale", 1.0))}
    return net
