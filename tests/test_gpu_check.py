"""scripts/gpu_check.py on a machine without CUDA: the clean refusal, and each measurement run on the CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
CPU = torch.device("cpu")
TINY_STEP = {"batch": 2, "lr_patch": 8, "steps": 2, "warmup": 1}


def _load(script: Path = SCRIPT, name: str = "pspl_scripts_gpu_check") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gpu_check = _load()
bench_data = _load(SCRIPT.with_name("bench_data.py"), "pspl_scripts_bench_data")


def test_refuses_without_cuda_in_one_line() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [gpu_check.NO_CUDA]
    assert "no CUDA device" in gpu_check.NO_CUDA and "python scripts/gpu_check.py" in gpu_check.NO_CUDA


def test_require_device(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        gpu_check.require_device("cuda")
    assert stop.value.code == 2
    assert capsys.readouterr().err == gpu_check.NO_CUDA + "\n"
    assert gpu_check.require_device("cpu") == CPU


@pytest.mark.parametrize("variant", ["fp32_eager", "bf16_mixed"])
def test_steps_per_second_on_cpu(variant: str) -> None:
    out = gpu_check.steps_per_second("tiny", variant, CPU, **TINY_STEP)
    assert set(out) == {"steps_per_s", "step_ms", "warmup_s", "peak_memory_mb"}
    assert out["steps_per_s"] > 0 and math.isclose(out["step_ms"], 1e3 / out["steps_per_s"])
    assert out["warmup_s"] > 0 and out["peak_memory_mb"] > 50  # peak RSS of this process on the CPU


def test_pspl_overhead_and_loss_alone_on_cpu() -> None:
    over = gpu_check.pspl_overhead(CPU, "fp32_eager", rounds=2, warmup=1, batch=2, lr_patch=8, model="tiny")
    assert over["step_pspl_ms"] > 0 and over["step_l1_ms"] > 0 and math.isfinite(over["overhead_pct"])
    loss = gpu_check.loss_alone(CPU, rounds=2, batch=1, size=16)
    assert set(loss["ms"]) == {"float32_exact", "float64", "float32", "reference", "l1"}
    assert all(v > 0 for v in loss["ms"].values()) and loss["shape"] == [1, 3, 16, 16]
    assert loss["exact_speedup_vs_float64"] > 0 and loss["exact_speedup_vs_reference"] > 0


def test_loader_patches_per_second_on_cpu(tmp_path: Path) -> None:
    out = gpu_check.loader_patches_per_s([0], seconds=0.2, batch=2, patch=16, images=1, size=(48, 64),
                                         root=tmp_path)
    assert set(out) == {"0_workers"} and out["0_workers"] > 0


class _Clock:
    """A stand-in for ``time``: every ``perf_counter()`` call is 0.25 s after the last (exact in binary)."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.25
        return self.now


@pytest.mark.parametrize("measure", [lambda loader, s: gpu_check._patches_per_s(loader, s),
                                     lambda loader, s: bench_data.patches_per_second(loader, s)],
                         ids=["gpu_check", "bench_data"])
def test_a_measuring_loop_goes_on_past_an_epochs_end(monkeypatch: pytest.MonkeyPatch, measure) -> None:
    """However fast the machine, a loader whose epoch ends before the measuring time does is restarted (it
    raised StopIteration); the clock here is a counter, so the numbers are exact and no test waits."""
    epochs: list[int] = []

    class TwoBatches:
        def __iter__(self):
            epochs.append(len(epochs))
            return iter([(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8))] * 2)

    for script in (gpu_check, bench_data):
        monkeypatch.setattr(script, "time", _Clock())
    # warm-up batch, then 4 timed batches of 2 patches at 0.25 s each: epochs 1 (1 left), 2 (2) and 3 (1)
    assert measure(TwoBatches(), 1.0) == 8 / 1.0
    assert epochs == [0, 1, 2]


FAKE_TRAIN = """
import json, pathlib, sys
run = pathlib.Path(next(a for a in sys.argv if a.startswith("hydra.run.dir=")).split("=", 1)[1])
if "fail" in sys.argv:
    print("Invalid configuration: data.root=/nowhere does not exist", file=sys.stderr)
    sys.exit(2)
run.mkdir(parents=True)
(run / "metrics.json").write_text(json.dumps({"global_step": 200, "val/psnr_y": 33.5, "val/ssim_y": 0.91}))
"""


def test_sample_run_reads_the_runs_metrics(tmp_path: Path) -> None:
    fake = [sys.executable, "-c", FAKE_TRAIN]
    out = gpu_check.sample_run(["trainer=gpu", "logger=csv"], timeout=60, command=fake, workdir=tmp_path)
    assert out["psnr_y"] == 33.5 and out["ssim_y"] == 0.91 and out["global_step"] == 200
    assert out["psnr_minus_cpu_db"] == pytest.approx(33.5 - 33.4737) and out["cpu_psnr_y"] == 33.4737
    failed = gpu_check.sample_run(["fail"], timeout=60, command=fake, workdir=tmp_path)
    assert failed["error"] == "exit 2: Invalid configuration: data.root=/nowhere does not exist"
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    slow = gpu_check.sample_run([], timeout=0.5, command=sleeper, workdir=tmp_path)
    assert slow["error"] == "timeout after 0 s"
    command = gpu_check.pspl_train_command()
    assert Path(command[-1]).name == "pspl-train" or command[-2:] == ["-m", "pspl_lightning.cli.train"]


def test_child_steps_time_out_and_budget_reports() -> None:
    assert gpu_check.steps_in_child("tiny", "fp32_eager", CPU, timeout=0.5) == {"error": "timeout after 0 s"}
    assert gpu_check.Budget(0).run(10, lambda: 1)["skipped"].startswith("time budget (")
    assert gpu_check.Budget(60).run(10, lambda: 1 / 0) == {"error": "ZeroDivisionError: division by zero"}
    assert gpu_check.Budget(60).run(10, lambda: {"ok": 1}) == {"ok": 1}


@pytest.mark.slow
def test_whole_check_on_cpu_prints_one_json_line(capsys: pytest.CaptureFixture) -> None:
    """Every measurement end to end on the CPU (tiny network, 2-step sample run, compile in a child)."""
    argv = ["--device", "cpu", "--models", "tiny", "--batch", "2", "--lr-patch", "8", "--steps", "2",
            "--warmup", "1", "--workers", "0", "--loader-seconds", "0.2", "--loader-images", "1",
            "--loader-size", "48x64", "--trainer", "cpu", "--sample-overrides", "debug=fast",
            "trainer.max_steps=2", "--budget", "900"]
    assert gpu_check.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    steps = report["steps"]["tiny"]
    assert set(steps) == set(gpu_check.STEP_VARIANTS)
    assert all(v["steps_per_s"] > 0 for v in steps.values()), steps
    assert report["sample_run"]["global_step"] == 2 and math.isfinite(report["sample_run"]["psnr_y"])
    assert report["loader"]["0_workers"] > 0 and report["loader"]["gpu_consumes_patches_per_s"] > 0, report
    assert report["loss_alone"]["ms"]["float32_exact"] > 0
    assert set(report["pspl_overhead"]) == {"fp32_eager", "bf16_channels_last"}
