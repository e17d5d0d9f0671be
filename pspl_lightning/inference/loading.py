"""Rebuild a network from any weights file: the project's own, or a community file spandrel recognises.

Accepted files:

- Lightning checkpoints of ``SRModule`` (``.ckpt``): network weights under ``state_dict["net.*"]`` (the EMA
  weights when the run kept them; the raw ones under ``current_model_state``), the resolved run config
  under ``pspl_config`` (``model`` node and ``data.scale``);
- files written by ``pspl-export`` (``.pth``/``.safetensors``): the state dict with the model config and
  scale in the metadata;
- any other state dict (``.pth``/``.pt``/``.ckpt``/``.safetensors``; wrapped in ``params_ema``, ``params``,
  ``state_dict``, ``model``, ... and prefixed ``module.``, as BasicSR, DDP and Lightning save them): the
  architecture, hyper-parameters and scale are detected from the keys by spandrel
  (:mod:`pspl_lightning.interop.community`), which also knows the project's EDSR and RDN and
  EDSR-PyTorch's official EDSR and RCAN files; without spandrel, or for a state dict it does not
  recognise, a model config and scale must be given.

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

from pspl_lightning.errors import CheckpointError
from pspl_lightning.legacy import model_config

FORMAT = "pspl-weights/1"
_IGNORED_MODEL_KEYS = ("scale", "_partial_", "_convert_", "_recursive_")
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DataParallel/AveragedModel wrappers


class WeightsError(CheckpointError):
    """A weights file that cannot be used as asked; the message names the file and the mismatch."""


class StoredWeights(NamedTuple):
    """A file's network state dict (wrapper prefixes removed), and the model config and scale it records
    (``None``: not recorded). ``detected``: the network spandrel built from the keys (then ``model`` and
    ``scale`` are what it detected and ``state`` is in that network's naming); ``info``: run id and which
    weights (``ema``/``raw``) a pspl-train checkpoint gave."""

    state: dict[str, Tensor]
    model: dict[str, Any] | None
    scale: int | None
    detected: nn.Module | None = None
    info: dict[str, Any] | None = None

    @property
    def network(self) -> str | None:
        """The class name of the network, e.g. ``EDSR`` (for the zoo: spandrel's class, e.g. ``SwinIR``)."""
        if self.detected is not None:
            return type(self.detected).__name__
        return network_name(self.model) if self.model else None


def network_name(model_cfg: dict[str, Any]) -> str:
    """``EDSR`` for ``pspl_lightning.archs.EDSR``; the zoo's ``arch`` (e.g. ``SwinIR``) for its factory."""
    if "arch" in model_cfg and str(model_cfg.get("_target_", "")).endswith("spandrel_net"):
        return str(model_cfg["arch"])
    return str(model_cfg.get("_target_", "?")).rsplit(".", 1)[-1]


def describe_model(model_cfg: dict[str, Any], scale: int | None = None) -> str:
    """``EDSR(n_feats=64, n_resblocks=16, res_scale=1.0) x2``: the class and its structural options."""
    name = network_name(model_cfg)
    args = ", ".join(f"{k}={v}" for k, v in sorted(model_cfg.items()) if not k.startswith("_")
                     and k not in _IGNORED_MODEL_KEYS and k != "arch")
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
    info: dict[str, Any] | None = None  # run id, EMA or raw weights, detected by spandrel

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


def read_weights(path: str | Path, ema: bool = True) -> StoredWeights:
    """The one reader of weights files: (network state_dict, model config, scale) from any accepted file,
    with torch.compile / DataParallel / AveragedModel prefixes removed. A file that records no config is
    identified by spandrel when it can (``detected``); else ``model`` and ``scale`` are ``None``.
    ``ema=False``: the raw weights of a run that kept an EMA (``callbacks=ema``)."""
    path = Path(path)
    stored = _read_weights(path, ema)
    state = {_unwrap(k): v for k, v in stored.state.items()}
    if stored.model is not None:
        return stored._replace(state=state)
    from pspl_lightning.interop.community import detect

    try:
        found = detect(state)
    except CheckpointError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    if found is None:
        return stored._replace(state=state)
    info = {**(stored.info or {}), "detected": found.architecture}
    return StoredWeights(found.net.state_dict(), found.model, found.scale, found.net, info)


def _from_edsr_pytorch(state: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Tensor]:
    """A pspl-export file of the project's RCAN holds EDSR-PyTorch's naming (what spandrel reads)."""
    if meta.get("naming") != EDSR_PYTORCH_NAMING:
        return state
    from pspl_lightning.interop.edsr_pytorch import rcan_from_official

    return rcan_from_official(state)


EDSR_PYTORCH_NAMING = "EDSR-PyTorch"
UNWRAP_KEYS = ("model_state_dict", "state_dict", "params_ema", "params-ema", "params", "model", "net")


def _read_weights(path: Path, ema: bool) -> StoredWeights:
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types; all mean "not a weights-only file"
        raise WeightsError(_unreadable(path, exc)) from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict or state_dict")
    if "pspl_config" in obj:  # a pspl-train Lightning checkpoint
        run = obj["pspl_config"]
        kept_ema = isinstance(obj.get("current_model_state"), dict)  # Lightning's WeightAveraging
        weights = obj["current_model_state"] if kept_ema and not ema else obj.get("state_dict", {})
        state = {k[4:]: v for k, v in weights.items() if k.startswith("net.")}
        gan_ema = {k[8:]: v for k, v in weights.items() if k.startswith("net_ema.")}
        if gan_ema and ema:  # recipe=realesrgan: the generator's EMA (net_ema.*) beside the raw net.*
            state, kept_ema = gan_ema, True
        if not state:
            raise WeightsError(f"{path} is a pspl-train checkpoint without network weights (no 'net.*' keys)")
        model = model_config(run.get("model") or {})
        scale = run.get("data", {}).get("scale", model.get("scale"))
        output_dir = (run.get("paths") or {}).get("output_dir")
        info = {"run_id": Path(str(output_dir)).name if output_dir else None,
                "weights": "ema" if kept_ema and ema else "raw", "step": obj.get("global_step")}
        return StoredWeights(state, model, int(scale) if scale is not None else None, None, info)
    if obj.get("format") == FORMAT:
        meta = obj.get("metadata") or {}
        info = {k: v for k, v in meta.items() if k in ("run_id", "weights")}
        state = _from_edsr_pytorch(obj["state_dict"], meta)
        return StoredWeights(state, dict(obj["model"]), int(obj["scale"]), None, info)
    for key in UNWRAP_KEYS:  # BasicSR, Lightning without our config, other trainers (spandrel's list)
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        obj = next(iter(obj.values()))
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise WeightsError(f"{path} holds no tensors: not a state_dict or checkpoint")
    for prefix in ("module.", "netG.", "net."):
        state = _strip_prefix(state, prefix)
    return StoredWeights(state, None, None)


_WANTED = "pass the run's .ckpt, or a .pth/.safetensors file (pspl-export writes them)"


def _unreadable(path: Path, exc: Exception) -> str:
    """One line saying what a file that ``torch.load`` cannot read is: a PyTorch file holding objects that a
    weights-only load refuses, an ONNX model, a text file, or no PyTorch file at all."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith((b"PK\x03\x04", b"\x80")):  # torch's zip format, or its legacy pickle
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return (f"{path} cannot be read as a weights-only checkpoint: it holds Python objects other than "
                f"tensors ({reason}); re-export it with pspl-export from a trusted environment")
    if path.suffix == ".onnx" or (head[:1] == b"\x08" and head[2:3] == b"\x12"):  # ModelProto: ir_version
        kind = "an ONNX model (for onnxruntime, chaiNNer), not a PyTorch checkpoint"
    elif head.startswith(b"\x93NUMPY"):
        kind = "a NumPy array, not a checkpoint or weights file"
    elif not head:
        kind = "an empty file, not a checkpoint or weights file"
    else:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        printable = text is not None and all(c.isprintable() or c in "\n\r\t" for c in text)
        kind = "a text file, not a checkpoint or weights file" if printable else \
            "not a PyTorch checkpoint or weights file (torch.load cannot read it)"
    return f"{path} cannot be read: it is {kind}; {_WANTED}"


def _read_safetensors(path: Path) -> StoredWeights:
    try:
        from safetensors import safe_open
    except ImportError:
        raise WeightsError(f"{path}: reading .safetensors needs the optional package: "
                           "pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise WeightsError(f"{path} cannot be read as a .safetensors file "
                           f"({type(exc).__name__}: {exc})") from None
    if "model" not in meta:
        return StoredWeights(_strip_prefix(state, "module."), None, None)
    model = json.loads(meta["model"])
    scale = int(meta["scale"]) if "scale" in meta else None
    info = {k: v for k, v in meta.items() if k in ("run_id", "weights")}
    return StoredWeights(_from_edsr_pytorch(state, meta), model, scale, None, info)


def load_network(path: str | Path, model: dict[str, Any] | None = None, scale: int | None = None,
                 device: str | torch.device = "cpu", ema: bool = True,
                 scale_key: str = "scale") -> LoadedNetwork:
    """Build the network of ``path`` and load its weights; eval mode, on ``device``.

    ``model`` (a model config with ``_target_``) and ``scale`` are what the caller asks for: a file made for
    another network or scale is refused with both named. A file whose network spandrel detects is checked
    by architecture (a ``model`` config of the same class then supplies what the keys cannot tell, e.g.
    EDSR's ``res_scale``); a file without a config that spandrel does not know is built from ``model``.
    ``scale_key``: the command's key for the scale, named in messages (``scales`` for pspl-eval).
    """
    path = Path(path)
    stored = read_weights(path, ema=ema)
    state, file_model, file_scale = stored.state, stored.model, stored.scale
    if file_model is None:
        if model is None:
            raise WeightsError(f"{path} is a state_dict of a network spandrel does not recognise (or "
                               f"spandrel is not installed) and records no model config: pass model=<config> "
                               f"(e.g. model=edsr_baseline) and {scale_key}=<2|3|4> to say which network it "
                               f"is")
        if scale is None:
            raise WeightsError(f"{path} is a bare state_dict without a scale: pass {scale_key}=<2|3|4>")
        file_model, file_scale = dict(model), scale
    if file_scale is None:
        raise WeightsError(f"{path}: its config names no scale (neither data.scale nor model.scale)")
    found = "detected by spandrel: " if stored.detected is not None else ""
    if scale is not None and int(scale) != file_scale:
        held = found + describe_model(file_model, file_scale)
        raise WeightsError(f"{path} is a x{file_scale} model ({held}), but scale {scale} was asked")
    if stored.detected is not None:
        net, build_cfg = _detected_network(path, stored, model)
    else:
        if model is not None and _signature(model) != _signature(file_model):
            raise WeightsError(f"{path} holds {describe_model(file_model, file_scale)}, but the network "
                               f"asked for is {describe_model(model, file_scale)}")
        build_cfg = {**_signature(file_model), "scale": file_scale}
        net = _build(path, build_cfg, file_scale)
        _load_strict(path, net, state, build_cfg)
    net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedNetwork(net=net, scale=file_scale, model_config=build_cfg, source=path, info=stored.info)


def _build(path: Path, build_cfg: dict[str, Any], scale: int) -> nn.Module:
    try:
        return instantiate(build_cfg)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot build {describe_model(build_cfg, scale)}: {exc}") from exc


def _load_strict(path: Path, net: nn.Module, state: dict[str, Tensor], build_cfg: dict[str, Any]) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        text = " ".join(str(exc).split())[:400]
        raise WeightsError(f"{path}: its weights do not fit {describe_model(build_cfg, build_cfg['scale'])}: "
                           f"{text}") from None


def _detected_network(path: Path, stored: StoredWeights, model: dict[str, Any] | None
                      ) -> tuple[nn.Module, dict[str, Any]]:
    """The network spandrel built, or the asked ``model`` of the same class with the file's weights."""
    detected, file_model, scale = stored.detected, stored.model, stored.scale
    build_cfg = {**_signature(file_model), "scale": scale}
    if model is None:
        return detected, build_cfg
    asked_cfg = {**_signature(model), "scale": scale}
    net = _build(path, asked_cfg, scale)
    if type(net) is not type(detected):
        raise WeightsError(f"{path} holds {describe_model(file_model, scale)} (detected by spandrel), but "
                           f"the network asked for is {describe_model(model, scale)}")
    _load_strict(path, net, stored.state, asked_cfg)
    return net, asked_cfg
