"""docs/BENCHMARKS.md: every benchmark script ends with one JSON line holding the documented keys, and takes
``--threads N`` and trailing Hydra overrides. The two scripts run side by side as subprocesses with their
smallest flags (about 6-7 s each on 2 CPU cores; nothing is compiled: the inputs are below the size of
the compiled SSIM kernels).

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

import pytest

SCRIPTS = Path(__file__).parents[1] / "scripts"

# docs/BENCHMARKS.md's "JSON keys (main)" column (``*_cpu_*`` spelled out; ``variants_ms`` needs --variants).
STEP_KEYS = {"pspl_overhead_pct", "loss_ms", "l1_loss_ms", "reference_loss_ms", "speedup_vs_reference",
             "float64_loss_ms", "speedup_vs_float64", "first_call_s", "step_pspl_s", "step_l1_s",
             "peak_memory_mb", "loss_cpu_ms", "l1_loss_cpu_ms", "pspl_overhead_cpu_pct", "step_pspl_cpu_s",
             "step_l1_cpu_s"}
LOOP_KEYS = {"ratio", "ratio_cpu", "lightning_step_ms", "manual_step_ms", "peak_rss_mb"}


STEP_ARGS = ["--device", "cpu", "--model", "tiny", "--batch", "1", "--lr-patch", "12", "--rounds", "1",
             "--warmup", "0", "--loss-rounds", "1", "--threads", "1", "loss.ssim_dtype=float64"]
LOOP_ARGS = ["--tiny", "--steps", "3", "--warmup", "0", "--rounds", "1", "--batch", "1", "--patch", "24",
             "--threads", "1", "--logger", "none", "--", "seed=7"]


def _last_json_line(out: str) -> dict[str, Any]:
    """The last line of ``out`` parsed as JSON (which must be an object, and the only JSON line)."""
    lines = out.strip().splitlines()
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    assert not any(line.lstrip().startswith("{") for line in lines[:-1])  # one JSON line, the last
    return result


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Both scripts run side by side (each is mostly imports), their JSON results by script name."""
    root = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PSPL_ROOT": str(root), "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": ""}
    procs = {name: subprocess.Popen([sys.executable, str(SCRIPTS / name), *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env, cwd=root)
             for name, args in (("bench_step.py", STEP_ARGS), ("bench_loop.py", LOOP_ARGS))}
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"{name}: {err[-3000:]}"
        done[name] = _last_json_line(out)
    return done


def _positive(result: dict[str, Any], keys: set[str]) -> None:
    for key in sorted(keys):
        assert isinstance(result[key], int | float) and math.isfinite(result[key]) and result[key] > 0, key


def test_bench_step_json(results: dict[str, dict[str, Any]]) -> None:
    result = results["bench_step.py"]
    assert set(result) >= STEP_KEYS and "variants_ms" not in result
    _positive(result, STEP_KEYS - {"pspl_overhead_pct", "pspl_overhead_cpu_pct"})
    assert math.isfinite(result["pspl_overhead_pct"]) and math.isfinite(result["pspl_overhead_cpu_pct"])
    assert (result["threads"], result["batch"], result["lr_patch"], result["model"], result["rounds"]) == (
        1, 1, 12, "tiny", 1)
    assert result["ssim_dtype"] == "float64"  # the trailing Hydra override reached the PSPL side


def test_bench_loop_json(results: dict[str, dict[str, Any]]) -> None:
    result = results["bench_loop.py"]
    assert set(result) >= LOOP_KEYS
    _positive(result, LOOP_KEYS)
    # one round: the ratio is the loop's step time over Lightning's (steps/s of Lightning over the loop's)
    assert math.isclose(result["ratio"], result["manual_step_ms"] / result["lightning_step_ms"], rel_tol=1e-3)
    assert (result["threads"], result["steps"], result["rounds"], result["tiny"], result["batch"],
            result["patch"]) == (1, 3, 1, True, 1, 24)
