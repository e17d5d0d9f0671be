"""The README's headline numbers are the ones recorded with the measurement they come from."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_train_figure_is_the_recorded_cpu_run() -> None:
    """README's `make train` result is the CPU figure gpu_check.py compares a GPU run with."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"Final validation at step 200: val/psnr_y = ([0-9.]+)", readme)
    assert shown is not None and float(shown.group(1)) == gpu_check.CPU_SAMPLE_PSNR
    assert f"{gpu_check.CPU_SAMPLE_PSNR} dB" in (ROOT / "docs" / "BENCHMARKS.md").read_text()
