"""docs/BENCHMARKS.md: every benchmark script ends with one JSON line holding the documented keys, and takes
``--threads N`` and trailing Hydra overrides. Each script runs as a subprocess with its smallest flags
(about 6-7 s each on 2 CPU cores; compiles nothing: the inputs are below the compiled SSIM kernels' size).

Not run here: ``bench_step.py --variants`` (``variants_ms``; it compiles every variant, 75-85 s) and
``scripts/bench_guard.py`` (always trains EDSR-baseline at batch 16 for 4 steps: 20 s at ``--rounds 1``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).parents[1] / "scripts"

# docs/BENCHMARKS.md's "JSON keys (main)" column (``*_cpu_*`` spelled out; ``variants_ms`` needs --variants).
STEP_KEYS = {"pspl_overhead_pct", "loss_ms", "l1_loss_ms", "reference_loss_ms", "speedup_vs_reference",
             "float64_loss_ms", "speedup_vs_float64", "first_call_s", "step_pspl_s", "step_l1_s",
             "peak_memory_mb", "loss_cpu_ms", "l1_loss_cpu_ms", "pspl_overhead_cpu_pct", "step_pspl_cpu_s",
             "step_l1_cpu_s"}
LOOP_KEYS = {"ratio", "ratio_cpu", "lightning_step_ms", "manual_step_ms", "peak_rss_mb"}


def run_script(name: str, *args: str, tmp_path: Path) -> dict[str, Any]:
    """Run ``scripts/<name>`` and return its last stdout line parsed as JSON (which must be an object)."""
    env = {**os.environ, "PSPL_ROOT": str(tmp_path), "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    assert not any(line.lstrip().startswith("{") for line in lines[:-1])  # one JSON line, the last
    return result


def _positive(result: dict[str, Any], keys: set[str]) -> None:
    for key in sorted(keys):
        assert isinstance(result[key], int | float) and math.isfinite(result[key]) and result[key] > 0, key


def test_bench_step_json(tmp_path: Path) -> None:
    result = run_script("bench_step.py", "--device", "cpu", "--model", "tiny", "--batch", "1", "--lr-patch",
                        "12", "--rounds", "1", "--warmup", "0", "--loss-rounds", "1", "--threads", "1",
                        "loss.ssim_dtype=float64", tmp_path=tmp_path)
    assert set(result) >= STEP_KEYS and "variants_ms" not in result
    _positive(result, STEP_KEYS - {"pspl_overhead_pct", "pspl_overhead_cpu_pct"})
    assert math.isfinite(result["pspl_overhead_pct"]) and math.isfinite(result["pspl_overhead_cpu_pct"])
    assert (result["threads"], result["batch"], result["lr_patch"], result["model"], result["rounds"]) == (
        1, 1, 12, "tiny", 1)
    assert result["ssim_dtype"] == "float64"  # the trailing Hydra override reached the PSPL side


def test_bench_loop_json(tmp_path: Path) -> None:
    result = run_script("bench_loop.py", "--tiny", "--steps", "3", "--warmup", "0", "--rounds", "1",
                        "--batch", "1", "--patch", "24", "--threads", "1", "--logger", "none", "--", "seed=7",
                        tmp_path=tmp_path)
    assert set(result) >= LOOP_KEYS
    _positive(result, LOOP_KEYS)
    # one round: the ratio is the loop's step time over Lightning's (steps/s of Lightning over the loop's)
    assert math.isclose(result["ratio"], result["manual_step_ms"] / result["lightning_step_ms"], rel_tol=1e-3)
    assert (result["threads"], result["steps"], result["rounds"], result["tiny"], result["batch"],
            result["patch"]) == (1, 3, 1, True, 1, 24)
