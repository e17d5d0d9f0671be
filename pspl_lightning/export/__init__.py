"""Models out: a checkpoint or weights file -> ``.safetensors``, ``.pth`` or ``.onnx`` (``pspl-export``).

Each export checks itself: a weights file is loaded back through spandrel's ``ModelLoader`` and an ONNX
file runs in onnxruntime, and the largest difference from the PyTorch network is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pspl_lightning.errors import ConfigError, OutputExistsError
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


def check_output(output: str | Path, overwrite: bool = False, half: bool = False) -> Path:
    """``output`` as a path if it is a file name we can write; the mistakes are one line each."""
    out = Path(output)
    if out.suffix not in SUFFIXES:
        raise ConfigError(f"output={out}: expected a file name ending in {', '.join(SUFFIXES)}")
    if half and out.suffix != ".onnx":
        raise ConfigError(f"half=true applies to .onnx outputs; output={out} keeps the stored precision")
    if out.is_dir():
        raise OutputExistsError(f"output={out} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output={out} exists; not replaced (pass overwrite=true)")
    return out


def _weights_note(loaded: LoadedNetwork, ema: bool) -> str:
    info = loaded.info or {}
    if "detected" in info:
        return f"architecture and scale detected by spandrel ({info['detected']})"
    if info.get("weights") == "ema":
        return "the EMA weights (callbacks=ema; ema=false for the raw ones)"
    if info.get("weights") == "raw":
        return "the raw weights (ema=false)" if not ema else "the raw weights (the run kept no EMA)"
    return "the weights as stored"


def spandrel_difference(path: Path, net: nn.Module, check_size: tuple[int, int] = CHECK_SIZE
                        ) -> tuple[str, int, float] | None:
    """(architecture, scale, largest |difference|) of ``path`` loaded by spandrel's ``ModelLoader`` against
    ``net`` on a random input; None when spandrel is absent or does not recognise the file."""
    try:
        from spandrel import ModelLoader, UnsupportedModelError
    except ImportError:
        return None
    from pspl_lightning.interop import register_spandrel

    register_spandrel()
    try:
        desc = ModelLoader().load_from_file(path)
    except UnsupportedModelError:
        return None
    x = torch.rand(1, 3, *check_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # clones: spandrel's RCAN scales its input in place
        diff = (desc.model.eval()(x.clone()) - net(x.clone())).abs().max().item()
    return desc.architecture.name, int(desc.scale), float(diff)


def export_model(ckpt: str | Path, output: str | Path, ema: bool = True, half: bool = False,
                 overwrite: bool = False) -> ExportResult:
    """Export the network of ``ckpt`` to ``output`` (the suffix picks the format) and check the file."""
    out = check_output(output, overwrite, half)
    loaded = load_network(ckpt, ema=ema)
    name = network_name(loaded.model_config)
    lines = [f"Read {loaded.describe()} from {ckpt}: {_weights_note(loaded, ema)}"]
    start = time.perf_counter()
    if out.suffix == ".onnx":
        from pspl_lightning.export.onnx import write_onnx

        report = write_onnx(loaded.net, name, out, half=half, check_size=CHECK_SIZE,
                            model_config=loaded.model_config)
        precision = "fp16" if half else "fp32"
        lines.append(f"Wrote {out} in {report.seconds:.1f} s: ONNX, {precision}, input 'input' 1x3xHxW RGB "
                     f"in [0, 1], height and width dynamic, output 1x3x{loaded.scale}Hx{loaded.scale}W")
        lines.append(f"onnxruntime vs PyTorch (fp32) on a {CHECK_SIZE[1]}x{CHECK_SIZE[0]} input: largest "
                     f"difference {report.max_abs_diff:.3g}")
        return ExportResult(out, loaded, report.seconds, report.max_abs_diff, lines)
    from pspl_lightning.export.weights import write_weights

    meta = write_weights(loaded, out)
    seconds = time.perf_counter() - start
    tensors = len(loaded.net.state_dict())
    lines.append(f"Wrote {out} in {seconds:.1f} s: {tensors} tensors in {meta['naming']} naming, metadata "
                 f"{sorted(k for k, v in meta.items() if v is not None)}")
    checked = spandrel_difference(out, loaded.net)
    if checked is None:
        lines.append(f"spandrel does not load {name} files (pspl-eval, pspl-upscale and init_from do)")
        return ExportResult(out, loaded, seconds, None, lines)
    arch, scale, diff = checked
    lines.append(f"spandrel's ModelLoader reads it as {arch} x{scale}; largest difference from PyTorch on a "
                 f"{CHECK_SIZE[1]}x{CHECK_SIZE[0]} input: {diff:.3g}")
    return ExportResult(out, loaded, seconds, diff, lines)
