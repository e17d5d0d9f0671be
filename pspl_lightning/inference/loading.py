"""Rebuild a trained network from a ``pspl-train`` checkpoint or an exported weights file, and export one.

Accepted files:

- Lightning checkpoints of ``SRModule`` (``.ckpt``): network weights under ``state_dict["net.*"]``, the
  resolved run config under ``pspl_config`` (``model`` node and ``data.scale``);
- exported weights (``.pth``): ``{"format": FORMAT, "model": <model config>, "scale": s, "state_dict": ...}``;
- exported weights (``.safetensors``): the tensors, with the model config and scale in the metadata;
- a bare state_dict (``.pth``/``.pt``; also BasicSR's ``params``/``params_ema``) when a model config is given.

Files are read with ``torch.load(weights_only=True)``: no code in a checkpoint is ever executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from pspl_lightning.atomic import atomic_path
from pspl_lightning.errors import CheckpointError, OutputExistsError

FORMAT = "pspl-weights/1"
_IGNORED_MODEL_KEYS = ("scale", "_partial_", "_convert_", "_recursive_")
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DataParallel/AveragedModel wrappers


class WeightsError(CheckpointError):
    """A weights file that cannot be used as asked; the message names the file and the mismatch."""


class StoredWeights(NamedTuple):
    """A file's network state dict (wrapper prefixes removed), and the model config and scale it records
    (``None``: not recorded)."""

    state: dict[str, Tensor]
    model: dict[str, Any] | None
    scale: int | None

    @property
    def network(self) -> str | None:
        """The class name of the recorded network, e.g. ``EDSR``."""
        target = (self.model or {}).get("_target_")
        return str(target).rsplit(".", 1)[-1] if target else None


def describe_model(model_cfg: dict[str, Any], scale: int | None = None) -> str:
    """``EDSR(n_feats=64, n_resblocks=16, res_scale=1.0) x2``: the class and its structural options."""
    name = str(model_cfg.get("_target_", "?")).rsplit(".", 1)[-1]
    args = ", ".join(f"{k}={v}" for k, v in sorted(model_cfg.items()) if not k.startswith("_")
                     and k not in _IGNORED_MODEL_KEYS)
    return f"{name}({args})" + (f" x{scale}" if scale is not None else "")


def _signature(model_cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in model_cfg.items() if k not in _IGNORED_MODEL_KEYS}


@dataclass
class LoadedNetwork:
    """A network in eval mode with what it was built from."""

    net: nn.Module
    scale: int
    model_config: dict[str, Any]
    source: Path

    def describe(self) -> str:
        return describe_model(self.model_config, self.scale)


def _strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _unwrap(key: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def read_weights(path: str | Path) -> StoredWeights:
    """The one reader of weights files: (network state_dict, model config or None, scale or None) from any
    accepted file, with torch.compile / DataParallel / AveragedModel prefixes removed."""
    stored = _read_weights(Path(path))
    return StoredWeights({_unwrap(k): v for k, v in stored.state.items()}, stored.model, stored.scale)


def _read_weights(path: Path) -> StoredWeights:
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types; all mean "not a weights-only file"
        raise WeightsError(
            f"{path} cannot be read as a weights-only checkpoint ({type(exc).__name__}: {exc}); "
            f"re-export it with scripts/export_weights.py from a trusted environment"
        ) from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict or state_dict")
    if "pspl_config" in obj:  # a pspl-train Lightning checkpoint
        run = obj["pspl_config"]
        state = {k[4:]: v for k, v in obj.get("state_dict", {}).items() if k.startswith("net.")}
        if not state:
            raise WeightsError(f"{path} is a pspl-train checkpoint without network weights (no 'net.*' keys)")
        model = dict(run.get("model") or {})
        model.pop("init_from", None)  # recorded inside ``model`` by runs before it became a top-level key
        scale = run.get("data", {}).get("scale", model.get("scale"))
        return StoredWeights(state, model, int(scale) if scale is not None else None)
    if obj.get("format") == FORMAT:
        return StoredWeights(obj["state_dict"], dict(obj["model"]), int(obj["scale"]))
    for key in ("state_dict", "params_ema", "params"):  # Lightning without our config, BasicSR
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise WeightsError(f"{path} holds no tensors: not a state_dict or checkpoint")
    return StoredWeights(_strip_prefix(_strip_prefix(state, "module."), "net."), None, None)


def _read_safetensors(path: Path) -> StoredWeights:
    try:
        from safetensors import safe_open
    except ImportError:
        raise WeightsError(f"{path}: reading .safetensors needs the optional package: "
                           "pip install safetensors") from None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    model = json.loads(meta["model"]) if "model" in meta else None
    scale = int(meta["scale"]) if "scale" in meta else None
    return StoredWeights(state, model, scale)


def load_network(path: str | Path, model: dict[str, Any] | None = None, scale: int | None = None,
                 device: str | torch.device = "cpu") -> LoadedNetwork:
    """Build the network of ``path`` and load its weights; eval mode, on ``device``.

    ``model`` (a model config with ``_target_``) and ``scale`` are what the caller asks for: a file made for
    another network or scale is refused with both named. A file without a config is built from ``model``.
    """
    path = Path(path)
    state, file_model, file_scale = read_weights(path)
    if file_model is None:
        if model is None:
            raise WeightsError(f"{path} is a bare state_dict without a model config: pass model=<config> "
                               f"(e.g. model=edsr_baseline) and scale=<2|3|4> to say which network it is")
        if scale is None:
            raise WeightsError(f"{path} is a bare state_dict without a scale: pass scale=<2|3|4>")
        file_model, file_scale = dict(model), scale
    if file_scale is None:
        raise WeightsError(f"{path}: its config names no scale (neither data.scale nor model.scale)")
    if scale is not None and int(scale) != file_scale:
        raise WeightsError(f"{path} is a x{file_scale} model ({describe_model(file_model, file_scale)}), "
                           f"but scale {scale} was asked")
    if model is not None and _signature(model) != _signature(file_model):
        raise WeightsError(f"{path} holds {describe_model(file_model, file_scale)}, but the network asked "
                           f"for is {describe_model(model, file_scale)}")
    build_cfg = {**_signature(file_model), "scale": file_scale}
    try:
        net = instantiate(build_cfg)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot build {describe_model(file_model, file_scale)}: {exc}") from exc
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: its weights do not fit {describe_model(file_model, file_scale)}: "
                           f"{exc}") from None
    net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedNetwork(net=net, scale=file_scale, model_config=build_cfg, source=path)


def export_weights(ckpt: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the network's weights alone, with the model config and scale that rebuild it.

    ``.safetensors`` needs the optional ``safetensors`` package; any other suffix is a ``torch.save`` dict
    readable with ``weights_only=True``. An existing ``out`` is kept unless ``overwrite``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; not replaced (use --overwrite, or overwrite=True)")
    loaded = load_network(ckpt)
    state = {k: v.detach().cpu().contiguous() for k, v in loaded.net.state_dict().items()}
    if out.suffix == ".safetensors":
        try:
            from safetensors.torch import save_file
        except ImportError:
            raise WeightsError("writing .safetensors needs the optional package: pip install safetensors; "
                               "or write a .pth file") from None
        with atomic_path(out) as tmp:
            save_file(state, str(tmp), metadata={"format": FORMAT, "model": json.dumps(loaded.model_config),
                                                 "scale": str(loaded.scale)})
    else:
        payload = {"format": FORMAT, "model": loaded.model_config, "scale": loaded.scale, "state_dict": state}
        with atomic_path(out) as tmp:
            torch.save(payload, tmp)
    return out
