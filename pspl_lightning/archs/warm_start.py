"""Warm start: copy the matching tensors of a checkpoint or weights file into a network.

The reference recipe trains x3/x4 from the x2 weights: everything but the scale-dependent upsampler
carries over. Reads Lightning checkpoints of this package (network keys prefixed ``net.``, the run config
under ``pspl_config``), bare state dicts, and weights files that wrap one (``state_dict``, ``params_ema``,
``params``, ``model`` or ``net`` entries, optionally with the ``scale`` or a ``config``).
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "params_ema", "params", "model", "net")
STRIP_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DataParallel/AveragedModel wrappers
FALLBACK_SCALE_PARTS = ("tail", "upsampl", "upconv", "upnet")


@dataclass
class WarmStartReport:
    """What :func:`load_matching_weights` did: tensors loaded, skipped (with the reason), left untouched."""

    path: Path
    source_scale: int | None
    target_scale: int | None
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    not_in_file: list[str] = field(default_factory=list)

    def summary(self) -> str:
        scales = f"x{self.source_scale or '?'} -> x{self.target_scale or '?'}"
        lines = [f"Warm start from {self.path} ({scales}): loaded {len(self.loaded)} tensors "
                 f"({', '.join(self.loaded)})"]
        if self.skipped:
            reasons = "; ".join(f"{k} ({v})" for k, v in self.skipped.items())
            lines.append(f"skipped {len(self.skipped)}: {reasons}")
        if self.not_in_file:
            lines.append(f"kept at initialisation (not in the file) {len(self.not_in_file)}: "
                         + ", ".join(self.not_in_file))
        return "\n  ".join(lines)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _scale_from(obj: Mapping[str, Any]) -> int | None:
    """The scale a file records: ``scale``, or ``model.scale`` / ``data.scale`` of its config."""
    if isinstance(obj.get("scale"), int):
        return int(obj["scale"])
    for cfg_key in ("pspl_config", "config"):
        cfg = obj.get(cfg_key)
        if isinstance(cfg, str):
            try:
                cfg = json.loads(cfg)
            except ValueError:
                continue
        if not isinstance(cfg, Mapping):
            continue
        for section in ("model", "data"):
            value = cfg.get(section, {}).get("scale") if isinstance(cfg.get(section), Mapping) else None
            if isinstance(value, int):
                return value
        if isinstance(cfg.get("scale"), int):
            return int(cfg["scale"])
    return None


def _load_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open
        except ImportError as exc:
            raise ImportError(f"model.init_from={path} is .safetensors: pip install safetensors") from exc
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a Mapping)
            meta = dict(f.metadata() or {})
        scale = meta.get("scale")
        return {"state_dict": tensors, "config": meta.get("config"),
                "scale": int(scale) if scale and scale.isdigit() else None}
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"model.init_from={path} cannot be read as tensors only (torch.load weights_only=True): {exc}. "
            f"If you trust the file, re-save its state_dict with torch.save(state_dict, 'weights.pth')."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"model.init_from={path} is not a PyTorch checkpoint or weights file: {exc}") \
            from None


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], int | None]:
    """The network's state dict stored in ``path`` (prefixes ``net.``, ``_orig_mod.``, ``module.`` removed)
    and the scale the file records (``None`` when it says nothing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from: no such checkpoint or weights file: {path}")
    obj = _load_file(path)
    scale: int | None = None
    state: Mapping[str, Tensor] | None = None
    if _is_state_dict(obj):
        state = obj
    elif isinstance(obj, Mapping):
        scale = _scale_from(obj)
        state = next((obj[k] for k in WRAPPER_KEYS if _is_state_dict(obj.get(k))), None)
    if state is None:
        found = sorted(obj)[:12] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"model.init_from={path} holds no state dict: expected a Lightning checkpoint, a state dict of "
            f"tensors, or a dict with one of {list(WRAPPER_KEYS)}; found {found}")
    if any(k.startswith("net.") for k in state):  # a Lightning checkpoint of SRModule: keep the network only
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    clean: dict[str, Tensor] = {}
    for key, value in state.items():
        for prefix in STRIP_PREFIXES:
            key = key.removeprefix(prefix)
        clean[key] = value
    return clean, scale


def _scale_dependent(net: nn.Module, key: str) -> bool:
    prefixes = getattr(net, "scale_dependent", None)
    if prefixes is not None:
        return any(key.startswith(p) for p in prefixes)
    return any(part in key.lower() for part in FALLBACK_SCALE_PARTS)


def load_matching_weights(net: nn.Module, path: str | Path, source_scale: int | None = None,
                          min_fraction: float = 0.5) -> WarmStartReport:
    """Copy into ``net`` every tensor of ``path`` whose name and shape match, except the scale-dependent
    layers (``net.scale_dependent``, e.g. the upsampler) when the file's scale differs from ``net.scale``.

    ``source_scale`` overrides the scale recorded in the file (bare state dicts record none; then only
    shape mismatches are skipped). Logs and returns a :class:`WarmStartReport`. Raises ``ValueError`` when
    less than ``min_fraction`` of the network's transferable tensors match: a file of another network or
    size would otherwise start a long run from mostly random weights without anyone noticing.
    """
    state, file_scale = read_weights(path)
    src = source_scale if source_scale is not None else file_scale
    dst = getattr(net, "scale", None)
    report = WarmStartReport(Path(path), src, dst)
    own = net.state_dict()
    cross_scale = src is not None and dst is not None and src != dst
    matched: dict[str, Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.skipped[key] = "not in the network"
        elif cross_scale and _scale_dependent(net, key):
            report.skipped[key] = f"scale-dependent, x{src} -> x{dst}"
        elif value.shape != own[key].shape:
            report.skipped[key] = f"shape {tuple(value.shape)} in the file, {tuple(own[key].shape)} here"
        else:
            matched[key] = value
    report.loaded = list(matched)
    report.not_in_file = [k for k in own if k not in matched]
    transferable = [k for k in own if not (cross_scale and _scale_dependent(net, k))]
    if len(matched) < min_fraction * len(transferable) or not matched:
        raise ValueError(
            f"model.init_from={path}: only {len(matched)} of the {len(transferable)} transferable tensors of "
            f"{type(net).__name__} match by name and shape (at least {min_fraction:.0%} expected): a "
            f"checkpoint of another network or size? Nothing was loaded. Matching: {list(matched)[:8]}; "
            f"not matching: {dict(list(report.skipped.items())[:8])}")
    net.load_state_dict(matched, strict=False)
    if src is None and any(_scale_dependent(net, k) for k in matched):
        log.warning("model.init_from=%s records no scale: upsampler tensors were loaded where shapes match "
                    "(pass source_scale to skip them)", path)
    log.info(report.summary())
    return report
