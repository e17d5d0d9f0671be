"""scripts/bench_infer.py (docs/BENCHMARKS.md, "ONNX Runtime against PyTorch eager") runs with its smallest
flags and ends with one JSON line holding the documented keys, onnxruntime's output equal to PyTorch's. It
benchmarks the zoo's compact network: the default suite's check that a zoo network exports to ONNX with
parity (EDSR-baseline's: tests/test_export.py); EDSR-baseline where spandrel is not installed (the oldest
stack)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
SPANDREL = importlib.util.find_spec("spandrel") is not None
ROOT = Path(__file__).resolve().parents[1]
KEYS = {"model", "scale", "lr_size", "threads", "repeats", "torch_eager_ms", "onnxruntime_ms", "ratio",
        "max_abs_diff", "export_s", "export_check_max_abs_diff", "torch", "onnxruntime", "cpu"}


def test_bench_infer_smallest_run() -> None:
    model, small = ("compact", ["model.num_feat=8", "model.num_conv=2"]) if SPANDREL else \
        ("edsr_baseline", ["model.n_resblocks=1", "model.n_feats=8"])  # the oldest stack has no zoo
    args = ["--model", model, "--size", "12", "--repeats", "1", "--warmup", "0", "--threads", "1", *small]
    done = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "scripts" / "bench_infer.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == KEYS
    setting = (result["model"], result["scale"], result["lr_size"], result["threads"])
    assert setting == (model, 2, 12, 1)
    assert result["torch_eager_ms"] > 0 and result["onnxruntime_ms"] > 0
    assert result["ratio"] == pytest.approx(result["torch_eager_ms"] / result["onnxruntime_ms"], rel=1e-3)
    assert result["max_abs_diff"] < 1e-5 and result["export_check_max_abs_diff"] < 1e-5
