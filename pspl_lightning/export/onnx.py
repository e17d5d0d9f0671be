"""``.onnx`` export: RGB NCHW float input in [0, 1] named ``input``, dynamic height and width, batch 1.

torch's dynamo exporter (``torch.onnx.export(dynamo=True)``, needs onnx and onnxscript) traces the network
with symbolic height and width; an architecture whose forward pass cannot be traced that way is refused in
one line naming it. Each export runs onnxruntime on an input of another size than the traced one and
reports the largest difference from PyTorch's float32 output.
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
from dataclasses import dataclass
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
    """An architecture that cannot be exported to ONNX with dynamic height and width."""


@dataclass
class OnnxReport:
    """What the export measured: seconds to export, the check's input size and largest difference."""

    seconds: float
    check_size: tuple[int, int]
    max_abs_diff: float


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


def write_onnx(net: nn.Module, name: str, out: Path, half: bool = False,
               check_size: tuple[int, int] = CHECK_SIZE, model_config: dict[str, Any] | None = None
               ) -> OnnxReport:
    """Export ``net`` (eval mode, CPU) to ``out`` atomically; check it with onnxruntime; fp16 if ``half``.

    The export runs in a child process: torch 2.14's exporter crashes its process (a segmentation fault in
    its decompositions) on some architectures, e.g. SPAN; the parent then refuses in one line naming the
    architecture. The child rebuilds the network from ``model_config`` (a ``_target_`` config naming a
    ``pspl_lightning`` class) and its state dict, or else unpickles ``net``; the check compares the child's
    onnxruntime output with ``net``'s own output here.
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
    x = torch.rand(1, 3, *check_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = net(x.clone()).numpy()
    with atomic_path(out) as tmp:
        seconds, got = _isolated(name, _export_and_run, spec, name, tmp, half, x)
        if got.shape != ref.shape:
            raise OnnxExportError(f"{name} cannot be exported to ONNX with dynamic height and width: the "
                                  f"exported graph gives {got.shape} for a {tuple(x.shape)} input, PyTorch "
                                  f"{ref.shape}; export .safetensors or .pth instead")
    return OnnxReport(seconds, check_size, float(np.abs(got - ref).max()))


def _network(spec: tuple) -> nn.Module:
    if spec[0] == "module":
        return spec[1]
    from hydra.utils import instantiate

    net = instantiate(spec[1])
    net.load_state_dict(spec[2])
    return net.eval()


def _export_and_run(spec: tuple, name: str, path: Path, half: bool, x: Tensor) -> tuple[float, np.ndarray]:
    """In the child: export the network of ``spec`` to ``path``; (seconds, onnxruntime's output for x)."""
    from torch.export import Dim

    net = _network(spec)
    dtype = torch.float16 if half else torch.float32
    export_net = copy.deepcopy(net).half() if half else net
    example = torch.rand(1, 3, *EXPORT_SIZE, generator=torch.Generator().manual_seed(1)).to(dtype)
    dims = ({2: Dim("height", min=1), 3: Dim("width", min=1)},)
    start = time.perf_counter()
    try:
        with _quiet():
            torch.onnx.export(export_net, (example,), str(path), dynamo=True, dynamic_shapes=dims,
                              input_names=["input"], output_names=["output"], external_data=False)
    except Exception as exc:  # the exporter raises many types; each means "cannot export"
        raise OnnxExportError(f"{name} cannot be exported to ONNX with dynamic height and width "
                              f"({_first_line(exc)}); export .safetensors or .pth instead") from None
    seconds = time.perf_counter() - start
    try:
        got = run_onnx(path, x.numpy().astype(np.float16 if half else np.float32)).astype(np.float32)
    except Exception as exc:
        size = f"{x.shape[-1]}x{x.shape[-2]}"
        raise OnnxExportError(f"{name} cannot be exported to ONNX with dynamic height and width: the "
                              f"exported graph fails at {size} ({_first_line(exc)}); "
                              f"export .safetensors or .pth instead") from None
    return seconds, got


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
            raise OnnxExportError(f"{name} cannot be exported to ONNX with dynamic height and width (torch's "
                                  f"exporter crashed: {why}); export .safetensors or .pth instead")
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
