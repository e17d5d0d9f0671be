"""Models out: a checkpoint or weights file -> ``.safetensors``, ``.pth`` or ``.onnx`` (``pspl-export``).

Each export checks itself: a weights file is loaded back through spandrel's ``ModelLoader`` and an ONNX
file runs in onnxruntime, and the largest difference from the PyTorch network is reported.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pspl_lightning.atomic import atomic_path
from pspl_lightning.errors import ConfigError, OutputExistsError, UserError
from pspl_lightning.inference.loading import LoadedNetwork, load_network, network_name

SUFFIXES = (".safetensors", ".pth", ".onnx")
CHECK_SIZE = (27, 41)  # LR height, width of the check input (odd, and not the ONNX trace size)


@dataclass
class ExportResult:
    """The written file, the network it holds, and the summary lines the CLI prints."""

    output: Path
    loaded: LoadedNetwork
    seconds: float
    max_abs_diff: float | None
    lines: list[str] = field(default_factory=list)


class ExportCheckError(UserError):
    """A written file that does not load back as the network it was written from; nothing is left."""


CHECK_TOLERANCE = 1e-4  # largest output difference a written file may show (RCAN's [0, 255] naming: 1e-5)


def check_output(output: str | Path, overwrite: bool = False) -> Path:
    """``output`` as a path if it is a file name we can write; the mistakes are one line each."""
    out = Path(output)
    if out.suffix not in SUFFIXES:
        raise ConfigError(f"output={out}: expected a file name ending in {', '.join(SUFFIXES)}")
    if out.is_dir():
        raise OutputExistsError(f"output={out} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output={out} exists; not replaced (pass overwrite=true)")
    return out


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A temporary name next to ``out`` with the same suffix (readers pick the format by it); renamed over
    ``out`` when the block succeeds (its checks passed), removed otherwise: ``out`` is never a file that
    failed its check, and an existing ``out`` is untouched until the new one passed."""
    with atomic_path(out, keep_suffix=True) as tmp:
        yield tmp


def parse_size(size: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``size=HxW`` (e.g. ``64x64``) as (height, width); None: dynamic height and width."""
    if size is None:
        return None
    if isinstance(size, str):
        parts = size.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise ConfigError(f"size={size}: expected HxW in LR pixels, e.g. size=64x64")
        return int(parts[0]), int(parts[1])
    h, w = (int(v) for v in size)
    return h, w


def _weights_note(loaded: LoadedNetwork, ema: bool) -> str:
    info = loaded.info or {}
    if "detected" in info:
        return f"architecture and scale detected by spandrel ({info['detected']})"
    if info.get("weights") == "ema":
        return "the EMA weights (callbacks=ema; ema=false for the raw ones)"
    if info.get("weights") == "raw":
        return "the raw weights (ema=false)" if not ema else "the raw weights (the run kept no EMA)"
    return "the weights as stored"


def _difference(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max().item())


def spandrel_difference(path: Path, net: nn.Module, check_size: tuple[int, int] = CHECK_SIZE,
                        desc: Any = None) -> tuple[str, int, float] | None:
    """(spandrel's architecture id, scale, largest |difference| from ``net``; inf when the output sizes
    differ) of ``path`` loaded by spandrel's ``ModelLoader``, on a random input of ``check_size`` (raised to
    the size the architecture requires, spandrel's ``size_requirements``); None when spandrel is absent or
    does not recognise the file. ``desc``: the file's descriptor when the caller has it."""
    desc = desc if desc is not None else spandrel_descriptor(path)
    if desc is None:
        return None
    x = check_input(fitted_size(check_size, desc))
    with torch.no_grad():  # clones: spandrel's RCAN scales its input in place
        diff = _difference(desc.model.eval()(x.clone()), net.eval()(x.clone()))
    return str(desc.architecture.id), int(desc.scale), diff


def spandrel_descriptor(path: Path) -> Any:
    """spandrel's ``ImageModelDescriptor`` of ``path``; None when spandrel is absent or does not know it."""
    try:
        from spandrel import ModelLoader, UnsupportedModelError
    except ImportError:
        return None
    from pspl_lightning.interop import register_spandrel

    register_spandrel()
    try:
        return ModelLoader().load_from_file(path)
    except UnsupportedModelError:
        return None


def fitted_size(size: tuple[int, int], desc: Any = None) -> tuple[int, int]:
    """``size`` raised to spandrel's size requirements of ``desc`` (minimum, multiple of; DRCT, DITN and
    others do not pad themselves)."""
    req = getattr(desc, "size_requirements", None)
    if req is None:
        return size
    step = max(int(getattr(req, "multiple_of", 1) or 1), 1)
    low = int(getattr(req, "minimum", 0) or 0)
    return tuple(max(-(-v // step) * step, -(-low // step) * step) for v in size)  # type: ignore[return-value]


def own_difference(path: Path, net: nn.Module, check_size: tuple[int, int] = CHECK_SIZE) -> float:
    """Largest |difference| between ``net`` and the network pspl-eval/pspl-upscale/init_from rebuild from
    ``path`` (inf when the output sizes differ), on a random input of ``check_size``."""
    x = check_input(check_size)
    with torch.no_grad():
        return _difference(load_network(path).net(x.clone()), net.eval()(x.clone()))


def check_input(check_size: tuple[int, int] = CHECK_SIZE) -> torch.Tensor:
    """The checks' input: 1 x 3 x H x W uniform in [0, 1], seeded."""
    return torch.rand(1, 3, *check_size, generator=torch.Generator().manual_seed(1))


def as_stored(net: nn.Module, half: bool) -> nn.Module:
    """``net`` with its floating-point weights rounded as a ``half`` file stores them (still float32)."""
    if not half:
        return net
    rounded = copy.deepcopy(net)
    with torch.no_grad():
        for t in [*rounded.parameters(), *rounded.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    return rounded


def expected_spandrel_id(loaded: LoadedNetwork) -> str:
    """The id spandrel should detect the file as: the zoo's ``spandrel_id``, else the network's name."""
    return str(getattr(loaded.net, "spandrel_id", None) or network_name(loaded.model_config))


def check_weights_file(path: Path, loaded: LoadedNetwork, half: bool = False
                       ) -> tuple[list[str], float | None]:
    """Load ``path`` back (as pspl-eval does, and through spandrel's ``ModelLoader`` where spandrel knows the
    architecture) and compare with the network it was written from; (summary lines, spandrel's difference).
    A file that reads as another architecture or scale, or whose output differs by more than
    :data:`CHECK_TOLERANCE`, raises :class:`ExportCheckError`."""
    name = network_name(loaded.model_config)
    ref = as_stored(loaded.net.eval(), half)
    desc = spandrel_descriptor(path)
    check_size = fitted_size(CHECK_SIZE, desc)
    size = f"{check_size[1]}x{check_size[0]}"
    ours = own_difference(path, ref, check_size)
    if not ours <= CHECK_TOLERANCE:
        raise ExportCheckError(f"{name} x{loaded.scale}: the written file does not load back as the network "
                               f"(largest output difference {ours:.3g} on a {size} input); nothing written")
    lines = [f"Read back as pspl-eval reads it: largest difference {ours:.3g}"]
    if desc is None:
        if hasattr(loaded.net, "spandrel_id"):
            raise ExportCheckError(f"{name} x{loaded.scale}: spandrel does not recognise the written file "
                                   f"(these options give keys its detection does not know); nothing written")
        lines.append(f"spandrel does not load {name} files (pspl-eval, pspl-upscale and init_from do)")
        return lines, None
    checked = spandrel_difference(path, ref, check_size, desc)
    assert checked is not None
    arch, scale, diff = checked
    want = expected_spandrel_id(loaded)
    if (arch, scale) != (want, loaded.scale):
        why = (" (spandrel counts ESRGAN's upsampling stages as powers of two)"
               if (arch, loaded.scale) == ("ESRGAN", 3) else "")
        raise ExportCheckError(f"{name} x{loaded.scale}: spandrel reads the written file as {arch} x{scale}"
                               f"{why}, so apps built on it would run another network; nothing written "
                               f"(pspl-eval and pspl-upscale read the checkpoint itself)")
    if not diff <= CHECK_TOLERANCE:
        raise ExportCheckError(f"{name} x{loaded.scale}: spandrel's ModelLoader reads the written file with "
                               f"a largest output difference of {diff:.3g} on a {size} input (it reads "
                               f"{_differing(desc, loaded.net)}); nothing written")
    stored = "fp16 weights" if half else "PyTorch"
    lines.append(f"spandrel's ModelLoader reads it as {arch} x{scale}; largest difference from {stored} on a "
                 f"{size} input: {diff:.3g}")
    return lines, diff


def _differing(desc: Any, net: nn.Module) -> str:
    """The hyper-parameters spandrel's loader assumed otherwise (those the state dict does not hold)."""
    theirs, ours = getattr(desc.model, "hyperparameters", {}), getattr(net, "hyperparameters", {})
    keys = [k for k in ours if k in theirs and _plain(theirs[k]) != _plain(ours[k])]
    if not keys:
        return "the same hyper-parameters; the output still differs"
    return ", ".join(f"{k}={_plain(theirs[k])} for {_plain(ours[k])}" for k in keys)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def export_model(ckpt: str | Path, output: str | Path, ema: bool = True, half: bool = False,
                 overwrite: bool = False, size: str | Sequence[int] | None = None) -> ExportResult:
    """Export the network of ``ckpt`` to ``output`` (the suffix picks the format), check the written file,
    and only then put it in place. ``half``: fp16 weights; ``size``: a fixed-size ONNX graph (HxW)."""
    out = check_output(output, overwrite)
    fixed = parse_size(size)
    if fixed is not None and out.suffix != ".onnx":
        raise ConfigError(f"size={size} applies to .onnx outputs (a fixed-size graph); output={out} holds "
                          f"weights only")
    loaded = load_network(ckpt, ema=ema)
    name = network_name(loaded.model_config)
    lines = [f"Read {loaded.describe()} from {ckpt}: {_weights_note(loaded, ema)}"]
    start = time.perf_counter()
    if out.suffix == ".onnx":
        from pspl_lightning.export.onnx import write_onnx

        report = write_onnx(loaded.net, name, out, half=half, check_size=CHECK_SIZE,
                            model_config=loaded.model_config, scale=loaded.scale, size=fixed)
        lines.extend(report.lines(out, loaded.scale))
        return ExportResult(out, loaded, report.seconds, report.max_abs_diff, lines)
    from pspl_lightning.export.weights import write_weights

    checked: dict[str, tuple[list[str], float | None]] = {}
    with staged(out) as tmp:
        meta = write_weights(loaded, tmp, half=half)
        checked["result"] = check_weights_file(tmp, loaded, half)
    seconds = time.perf_counter() - start
    tensors = len(loaded.net.state_dict())
    precision = "fp16" if half else "as trained"
    lines.append(f"Wrote {out} in {seconds:.1f} s: {tensors} tensors ({precision}) in {meta['naming']} "
                 f"naming, metadata {sorted(k for k, v in meta.items() if v is not None)}")
    check_lines, diff = checked["result"]
    lines.extend(check_lines)
    return ExportResult(out, loaded, seconds, diff, lines)
