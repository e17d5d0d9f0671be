"""Warm start: copy the matching tensors of a checkpoint or weights file into a network.

The reference recipe trains x3/x4 from the x2 weights: everything but the scale-dependent upsampler
carries over. Files are read by :func:`pspl_lightning.inference.loading.read_weights` (the one reader of
the project: Lightning checkpoints of ``pspl-train``, exported ``.pth`` / ``.safetensors`` weights, bare
and BasicSR state dicts; ``weights_only`` loading, so no code in a file runs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from pspl_lightning.errors import ConfigError
from pspl_lightning.inference.loading import StoredWeights, WeightsError
from pspl_lightning.inference.loading import read_weights as load_weights_file

log = logging.getLogger(__name__)

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


def read_weights(path: str | Path) -> StoredWeights:
    """The weights of ``path`` for ``init_from`` (any file
    :func:`~pspl_lightning.inference.loading.read_weights` accepts); errors name the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"init_from: no such checkpoint or weights file: {path}")
    try:
        return load_weights_file(path)
    except WeightsError as exc:
        raise ConfigError(f"init_from: {exc}") from None


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
    shape mismatches are skipped). Logs and returns a :class:`WarmStartReport`. Raises ``ConfigError`` when
    the file records another network class, or when less than ``min_fraction`` of the network's
    transferable tensors (or of the file's) match: a file of another network or size would otherwise
    start a long run from mostly random weights without anyone noticing.
    """
    stored = read_weights(path)
    state, file_scale, file_network = stored.state, stored.scale, stored.network
    # a zoo network is named by its spandrel id in configs (``arch: ESRGAN``), else by class (RRDBNet)
    if file_network is not None and file_network not in (type(net).__name__, getattr(net, "arch", None)):
        raise ConfigError(f"init_from={path} is a checkpoint of {file_network}; the network to start "
                          f"is {type(net).__name__}: warm start needs the same architecture")
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
    foreign = [k for k, why in report.skipped.items() if not why.startswith("scale-dependent")]
    if not matched or len(matched) < min_fraction * max(len(transferable), len(matched) + len(foreign)):
        raise ConfigError(
            f"init_from={path}: only {len(matched)} tensors match {type(net).__name__} by name and "
            f"shape (of {len(transferable)} transferable in the network and {len(matched) + len(foreign)} in "
            f"the file; at least {min_fraction:.0%} of both expected): a checkpoint of another network or "
            f"size? Nothing was loaded. Matching: {list(matched)[:8]}; "
            f"not matching: {dict(list(report.skipped.items())[:8])}")
    net.load_state_dict(matched, strict=False)
    if src is None and any(_scale_dependent(net, k) for k in matched):
        log.warning("init_from=%s records no scale: upsampler tensors were loaded where shapes match "
                    "(pass source_scale to skip them)", path)
    log.info(report.summary())
    return report
