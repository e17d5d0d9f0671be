"""``.onnx`` export: RGB NCHW float input in [0, 1] named ``input``, dynamic batch, height and width (or a
fixed height and width with ``size``), with ``metadata_props`` (architecture, scale, input range, precision).

torch's dynamo exporter (``torch.onnx.export(dynamo=True)``, needs onnx and onnxscript) traces the network
with symbolic sizes; where it fails, torch's TorchScript-based exporter is tried. An architecture neither
exports is refused in one line naming it. Each export runs onnxruntime on a batch of 2 of another size than
the traced one and reports the largest difference from PyTorch's float32 output.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pspl_lightning.atomic import atomic_path
from pspl_lightning.errors import ConfigError, UserError

EXPORT_SIZE = (32, 32)  # the traced input (LR pixels); the check uses CHECK_SIZE, which differs on purpose
CHECK_SIZE = (27, 41)


class OnnxExportError(UserError):
    """An architecture that cannot be exported to ONNX as asked."""


EXPORTERS = ("dynamo", "torchscript")  # torch.onnx.export(dynamo=True), then the TorchScript-based one


@dataclass
class OnnxReport:
    """What the export measured: seconds, the exporter that worked, the graph's input size (None: dynamic
    batch, height and width), the check's input and its largest difference from PyTorch."""

    seconds: float
    check_size: tuple[int, int]
    max_abs_diff: float
    exporter: str = "dynamo"
    size: tuple[int, int] | None = None
    half: bool = False
    tried: list[str] = field(default_factory=list)

    def lines(self, out: Path, scale: int) -> list[str]:
        """The summary lines pspl-export prints."""
        precision = "fp16" if self.half else "fp32"
        exporter = {"dynamo": "torch.onnx.export(dynamo=True)",
                    "torchscript": "torch's TorchScript-based exporter (dynamo=False)"}[self.exporter]
        if self.size is None:
            shape = f"Nx3xHxW RGB in [0, 1], batch, height and width dynamic, output Nx3x{scale}Hx{scale}W"
        else:
            h, w = self.size
            shape = (f"Nx3x{h}x{w} RGB in [0, 1] (fixed size, batch dynamic), output "
                     f"Nx3x{h * scale}x{w * scale}")
        lines = [f"Wrote {out} in {self.seconds:.1f} s with {exporter}: ONNX, {precision}, input 'input' "
                 f"{shape}; metadata_props: {', '.join(METADATA_KEYS)}"]
        lines.extend(self.tried)
        h, w = self.check_size
        lines.append(f"onnxruntime vs PyTorch (fp32) on a batch of 2 {w}x{h} inputs: largest difference "
                     f"{self.max_abs_diff:.3g}")
        return lines


METADATA_KEYS = ("architecture", "scale", "input_range", "precision", "input_layout", "exporter", "size")


def _first_line(exc: BaseException) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())  # without the exporter's colours
    return f"{type(exc).__name__}: {text[:200]}"


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """The output of the ONNX model at ``path`` for the NCHW array ``x`` (onnxruntime, CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing node is reported by the caller, in one line
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def onnx_difference(path: Path, net: nn.Module, x: Tensor, half: bool = False) -> float:
    """Largest |onnxruntime(path)(x) - net(x)| (inf when the shapes differ); ``half``: the ONNX input is
    fp16. onnxruntime's errors (a graph that fails at this size) propagate."""
    got = run_onnx(path, x.numpy().astype(np.float16 if half else np.float32)).astype(np.float32)
    with torch.no_grad():
        ref = net.eval()(x.clone()).numpy()
    if got.shape != ref.shape:
        return float("inf")
    return float(np.abs(got - ref).max())


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Write ``props`` into the ONNX file's ``metadata_props`` (free key/value strings)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def write_onnx(net: nn.Module, name: str, out: Path, half: bool = False,
               check_size: tuple[int, int] = CHECK_SIZE, model_config: dict[str, Any] | None = None,
               scale: int | None = None, size: tuple[int, int] | None = None) -> OnnxReport:
    """Export ``net`` (eval mode, CPU) to ``out``: written to a temporary name, checked with onnxruntime on
    a batch of 2 at another size than the traced one (or at ``size``, the fixed size), then renamed.

    torch's dynamo exporter is tried first, then the TorchScript-based one when it fails or its graph fails
    the check. Each export runs in a child process: torch 2.14's exporter crashes its process (a
    segmentation fault in its decompositions) on some architectures, e.g. SPAN. The child rebuilds the
    network from ``model_config`` (a ``_target_`` config naming a ``pspl_lightning`` class) and its state
    dict, or else unpickles ``net``; the check compares the file's onnxruntime output with ``net``'s own.
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"output=*.onnx needs the optional packages ({exc}): "
                          "pip install -e '.[onnx]'") from None
    net = net.to("cpu").eval()
    rebuildable = model_config is not None and str(model_config.get("_target_", "")).startswith(
        "pspl_lightning.")  # the project's networks and the zoo; another class is unpickled instead
    spec = (("config", model_config, {k: v.detach() for k, v in net.state_dict().items()})
            if rebuildable else ("module", net))
    shape = size if size is not None else check_size
    x = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(0))
    what = "with dynamic height and width" if size is None else f"at {size[0]}x{size[1]}"
    hint = "; export .safetensors or .pth instead" + (", or a fixed-size graph with size=HxW"
                                                       if size is None else "")
    props = {"architecture": name, "scale": str(scale if scale is not None else getattr(net, "scale", "")),
             "input_range": "RGB in [0, 1], NCHW", "precision": "fp16" if half else "fp32",
             "input_layout": "NCHW, batch dynamic" + (", height and width dynamic" if size is None else
                                                      f", height {size[0]}, width {size[1]}")}
    failures: list[str] = []
    with atomic_path(out) as tmp:
        for exporter in EXPORTERS:
            tmp.unlink(missing_ok=True)
            try:
                seconds = _isolated(name, _export, spec, name, tmp, half, exporter, size)
                diff = onnx_difference(tmp, net, x, half)
            except OnnxExportError as exc:
                failures.append(f"{exporter}: {exc}")
                continue
            except Exception as exc:  # onnxruntime's errors: the graph fails at the check's size
                failures.append(f"{exporter}: the exported graph fails on a 2x3x{shape[0]}x{shape[1]} input "
                                f"({_first_line(exc)})")
                continue
            if diff == float("inf"):
                failures.append(f"{exporter}: the exported graph's output has another size than PyTorch's "
                                f"for a 2x3x{shape[0]}x{shape[1]} input")
                continue
            set_metadata(tmp, {**props, "exporter": exporter,
                               "size": "dynamic" if size is None else f"{size[0]}x{size[1]}"})
            tried = [f"the dynamo exporter failed ({failures[0].split(': ', 1)[1]}); the TorchScript-based "
                     f"one was used"] if failures else []
            return OnnxReport(seconds, shape, diff, exporter, size, half, [t[:300] for t in tried])
        raise OnnxExportError(f"{name} cannot be exported to ONNX {what} "
                              f"({'; '.join(f[:160] for f in failures)}){hint}")


def _network(spec: tuple) -> nn.Module:
    if spec[0] == "module":
        return spec[1]
    from hydra.utils import instantiate

    net = instantiate(spec[1])
    net.load_state_dict(spec[2])
    return net.eval()


def _export(spec: tuple, name: str, path: Path, half: bool, exporter: str,
            size: tuple[int, int] | None) -> float:
    """In the child: export the network of ``spec`` to ``path`` with ``exporter``; the seconds it took."""
    from torch.export import Dim

    net = _network(spec)
    dtype = torch.float16 if half else torch.float32
    export_net = copy.deepcopy(net).half() if half else net
    example = torch.rand(2, 3, *(size or EXPORT_SIZE), generator=torch.Generator().manual_seed(1)).to(dtype)
    start = time.perf_counter()
    try:
        with _quiet():
            if exporter == "dynamo":
                dims: dict[int, Any] = {0: Dim("batch", min=1)}
                if size is None:
                    dims.update({2: Dim("height", min=1), 3: Dim("width", min=1)})
                torch.onnx.export(export_net, (example,), str(path), dynamo=True, dynamic_shapes=(dims,),
                                  input_names=["input"], output_names=["output"], external_data=False)
            else:
                axes = {0: "batch"} if size is not None else {0: "batch", 2: "height", 3: "width"}
                torch.onnx.export(export_net, (example,), str(path), dynamo=False, opset_version=17,
                                  input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": axes, "output": axes})
    except Exception as exc:  # the exporter raises many types; each means "cannot export this way"
        raise OnnxExportError(_first_line(exc)) from None
    return time.perf_counter() - start


def _isolated(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a child interpreter (``python -m pspl_lightning.export.onnx``; not a fork, whose
    child can hang on a lock inherited from a process that ran torch, and not multiprocessing's spawn,
    which re-runs a calling script without a ``__main__`` guard). A crashed child becomes an
    :class:`OnnxExportError` naming ``name``; an exception in it is raised here."""
    with tempfile.TemporaryDirectory() as tmp:
        job, result = Path(tmp) / "job.pt", Path(tmp) / "result.pt"
        torch.save((torch.get_num_threads(), fn, args), job)  # our own file, read back by our own child
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                          os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, "-m", "pspl_lightning.export.onnx", str(job), str(result)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not result.is_file():
            code = done.returncode
            why = f"signal {signal.Signals(-code).name}" if code < 0 else \
                f"exit status {code}: {(done.stderr.strip().splitlines() or [''])[-1][:200]}"
            raise OnnxExportError(f"torch's exporter crashed ({why})")
        kind, value = torch.load(result, weights_only=False)
    if kind == "error":
        raise value
    return value


def _child(job: str, result: str) -> None:
    """The child: run the job with the parent's thread count; write ("ok", report) or ("error", exception)."""
    threads, fn, args = torch.load(job, weights_only=False)
    torch.set_num_threads(threads)
    try:
        outcome: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # handed to the parent, which raises it
        outcome = ("error", exc if _picklable(exc) else RuntimeError(traceback.format_exc()))
    torch.save(outcome, result)


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.dumps(exc)
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _quiet():
    """The exporter prints its progress on stdout and logs warnings; the CLI prints its own summary."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        onnx_log.setLevel(level)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
