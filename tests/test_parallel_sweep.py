"""hydra/launcher=local_parallel: N sweep jobs at a time, each in its own process with its own devices.

The sweeps run ``pspl-train -m`` as a subprocess (as tests/test_scale_out.py does for the sequential one);
GPU pinning is checked on CPU by handing out device indices (``visible_gpus``) that the CPU jobs record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pspl_lightning.launch.devices import (
    LaunchConfigError,
    cpu_cores,
    plan_slots,
    threads_per_job,
    visible_gpus,
)
from tests.conftest import TINY

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
SWEEP = [o for o in TINY if not o.startswith(("logger=", "trainer.max_steps", "trainer.val_check"))]


class Barrier(Callback):
    """Test probe: each job marks its start in ``folder`` and waits (at most ``timeout_s``) until ``parties``
    jobs have started, so jobs that really run at the same time are all inside training at once."""

    def __init__(self, folder: str, parties: int, timeout_s: float = 120.0) -> None:
        self.folder, self.parties, self.timeout_s = Path(folder), parties, timeout_s

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{os.getpid()}.started").touch()
        deadline = time.monotonic() + self.timeout_s
        while len(list(self.folder.glob("*.started"))) < self.parties and time.monotonic() < deadline:
            time.sleep(0.05)


class ExitAtStep(Callback):
    """Test probe: the job's process dies at ``step`` with exit code ``code`` (as if killed); 0: never.
    With ``in_job``, only the sweep job numbered ``in_job`` dies (``job``: ``${hydra:job.num}``)."""

    def __init__(self, code: int, step: int = 1, job: int | None = None, in_job: int | None = None) -> None:
        self.code, self.step = code, step
        self.dies = in_job is None or job == in_job

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if self.code and self.dies and trainer.global_step >= self.step:
            os._exit(self.code)


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PSPL_ROOT": str(root), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}


def _sweep(args: list[str], root: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pspl_lightning.cli.train", "-m", "hydra/launcher=local_parallel", *args]
    return subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout)


def _jobs(root: Path) -> list[Path]:
    (sweep,) = (root / "outputs" / "train" / "multiruns").iterdir()
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _overlap(a: dict, b: dict) -> bool:
    return max(a["start"], b["start"]) < min(a["end"], b["end"])


def test_slots_split_the_gpus_and_threads_split_the_cores() -> None:
    assert plan_slots(2, 1, [0, 1, 2, 3]) == [[0], [1]]
    assert plan_slots(None, 2, list(range(8))) == [[0, 1], [2, 3], [4, 5], [6, 7]]  # fills the node
    assert plan_slots(None, None, [3, 5]) == [[3], [5]]  # one GPU per job by default
    assert plan_slots(None, None, []) == [[], []]  # no GPU: 2 CPU jobs
    assert plan_slots(3, 0, [0, 1]) == [[], [], []]  # CPU jobs even where GPUs exist
    with pytest.raises(LaunchConfigError, match=r"n_jobs=3 x gpus_per_job=2 needs 6 GPUs; 4 visible"):
        plan_slots(3, 2, [0, 1, 2, 3])
    with pytest.raises(LaunchConfigError, match=r"hydra.launcher.n_jobs=0: expected at least 1"):
        plan_slots(0, 0, [])
    with pytest.raises(LaunchConfigError, match=r"gpus_per_job=2: only 1 GPU"):
        plan_slots(None, 2, [0])
    assert threads_per_job(2, cores=16) == 8 and threads_per_job(3, cores=2) == 1
    assert threads_per_job(2, threads=3, cores=16) == 3
    with pytest.raises(LaunchConfigError, match=r"threads_per_job=0"):
        threads_per_job(2, threads=0)
    assert cpu_cores() == len(os.sched_getaffinity(0))


def test_visible_gpus_come_from_config_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    assert visible_gpus() == [3, 5, 7]
    assert visible_gpus([1, 2]) == [1, 2]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8c1d,GPU-77ae")
    with pytest.raises(LaunchConfigError, match=r"CUDA_VISIBLE_DEVICES=GPU-8c1d,GPU-77ae .*visible_gpus"):
        visible_gpus()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus() == list(range(torch.cuda.device_count()))


def test_launcher_config_composes_and_is_typed(train_cfg) -> None:
    cfg = train_cfg("hydra/launcher=local_parallel", "hydra.launcher.n_jobs=4",
                    "hydra.launcher.gpus_per_job=2")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.pspl_launchers.local_parallel.LocalParallelLauncher"
    assert (launcher.n_jobs, launcher.gpus_per_job, launcher.threads_per_job) == (4, 2, None)
    assert launcher.timeout_min == 30 * 24 * 60
    with pytest.raises(Exception, match=r"n_jobs"):
        train_cfg("hydra/launcher=local_parallel", "hydra.launcher.n_jobs=many")


def test_entry_point_imports_nothing_optional_and_names_the_missing_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import sys, hydra_plugins.pspl_launchers.local_parallel; "
            "print(sorted(m for m in ('submitit', 'torch', 'lightning') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(ROOT), capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr  # Hydra imports it at each start
    from hydra_plugins.pspl_launchers.local_parallel import LocalParallelLauncher

    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher.submitit_launcher", None)
    monkeypatch.delitem(sys.modules, "pspl_lightning.launch.local_parallel", raising=False)
    with pytest.raises(ImportError, match=r"local_parallel needs hydra-submitit-launcher: pip install -e"):
        LocalParallelLauncher(n_jobs=2)


def test_parallel_2x2_sweep_runs_two_at_a_time_on_own_devices(sample_root: Path, tmp_path: Path) -> None:
    """Four jobs, two at a time, each on its own device with its own W&B run; the last job's process dies at
    its first step (as if killed), which ends that job only: the sweep goes on, ends with the table of its
    jobs (the dead one without a result) and exits 4."""
    barrier = tmp_path / "barrier"
    proc = _sweep([*SWEEP, f"data.root={sample_root}", "trainer=cpu", "trainer.max_steps=2", "logger=wandb",
                   "hydra.launcher.n_jobs=2", "hydra.launcher.gpus_per_job=1",
                   "hydra.launcher.visible_gpus=[4,7]",
                   "+callbacks.barrier._target_=tests.test_parallel_sweep.Barrier",
                   f"+callbacks.barrier.folder={barrier}", "+callbacks.barrier.parties=2",
                   "+callbacks.crash._target_=tests.test_parallel_sweep.ExitAtStep",
                   "+callbacks.crash.code=9",
                   "+callbacks.crash.job=${hydra:job.num}", "+callbacks.crash.in_job=3",
                   "loss.alpha=0.5,2", "loss.max_weight=1,3"], tmp_path, timeout=600)
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "#3 (" in log and "ended without a result" in log and "jobs [3] failed" in log
    jobs = _jobs(tmp_path)
    psnr = [json.loads((job / "metrics.json").read_text())["val/psnr_y"] for job in jobs[:3]]
    assert (jobs[0].parent / "summary.md").read_text().splitlines() == [
        "| # | overrides | status | val/psnr_y |", "|---|---|---|---|",
        f"| 0 | loss.alpha=0.5 loss.max_weight=1 | ok | {psnr[0]:.4f} |",
        f"| 1 | loss.alpha=0.5 loss.max_weight=3 | ok | {psnr[1]:.4f} |",
        f"| 2 | loss.alpha=2 loss.max_weight=1 | ok | {psnr[2]:.4f} |",
        "| 3 | loss.alpha=2 loss.max_weight=3 | died: no result (killed, out of memory or a crash; see its "
        "train.log) |  |", "4 jobs: 3 ok, 1 failed"]
    assert proc.stderr.strip().splitlines()[-1] == "Sweep: 1 job(s) failed: #3 (the table above)"
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    assert not (jobs[3] / "metrics.json").exists()
    wandb_ids, overrides, records = set(), set(), []
    for job in jobs:
        assert "Sweep job" in (job / "train.log").read_text()  # its own log, with what it was given
        overrides.add(tuple(line for line in (job / ".hydra" / "overrides.yaml").read_text().splitlines()
                            if "loss." in line))
        records.append(json.loads((job / "launch.json").read_text()))
        if job.name == "3":
            continue
        assert json.loads((job / "metrics.json").read_text())["global_step"] == 2
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"{job}: expected one W&B run, got {runs}"
        wandb_ids.add(runs[0].name.rsplit("-", 1)[-1])
    assert len(wandb_ids) == 3 and len(overrides) == 4
    assert records[3]["end"] is None  # the dead job's process never reached its end

    threads = max(1, cpu_cores() // 2)
    assert [r["job"] for r in records] == [0, 1, 2, 3] and len({r["pid"] for r in records}) == 4
    assert [r["CUDA_VISIBLE_DEVICES"] for r in records[:2]] == ["4", "7"]  # the first jobs: slots 0 and 1
    for r in records:
        assert r["CUDA_VISIBLE_DEVICES"] == ["4", "7"][r["slot"]]
        assert r["torch_threads"] == threads and r["OMP_NUM_THREADS"] == str(threads)
    assert _overlap(records[0], records[1])  # the first two ran at the same time
    finished = records[:3]
    for a in finished:  # never more than 2 at once, never two at once on the same device
        concurrent = [b for b in finished if b is not a and _overlap(a, b)]
        assert len(concurrent) <= 1
        assert all(b["CUDA_VISIBLE_DEVICES"] != a["CUDA_VISIBLE_DEVICES"] for b in concurrent)
    assert records[3]["start"] >= min(r["end"] for r in finished)  # the last job waited for a free slot


def test_bad_launcher_settings_stop_before_any_job(sample_root: Path, tmp_path: Path) -> None:
    proc = _sweep([*SWEEP, f"data.root={sample_root}", "hydra.launcher.n_jobs=3",
                   "hydra.launcher.gpus_per_job=1", "hydra.launcher.visible_gpus=[0,1]", "seed=1,2,3"],
                  tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out
    assert "Invalid configuration: hydra.launcher.n_jobs=3 x gpus_per_job=1 needs 3 GPUs; 2 visible" in out
    assert not list((tmp_path / "outputs" / "train" / "multiruns").glob("*/0"))


def test_sigterm_to_the_sweep_checkpoints_every_running_job(sample_root: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pspl_lightning.cli.train", "-m", "hydra/launcher=local_parallel", *SWEEP,
           f"data.root={sample_root}", "trainer=cpu", "trainer.max_steps=100000", "logger=csv",
           "schedule.checkpoint_every_n_steps=100000", "hydra.launcher.n_jobs=2", "seed=1,2,3"]
    sweep = subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while len(list(tmp_path.glob("outputs/train/multiruns/*/[01]/csv/metrics.csv"))) < 2:
            assert time.monotonic() < deadline and sweep.poll() is None, "the first two jobs did not start"
            time.sleep(0.5)
        time.sleep(2)
        sweep.send_signal(signal.SIGTERM)
        out, _ = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 143, out[-3000:]
    jobs = _jobs(tmp_path)
    assert [j.name for j in jobs] == ["0", "1"]  # job 2 never started
    for job in jobs:
        ckpt = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert 0 < ckpt["global_step"] < 100000
        assert json.loads((job / "launch.json").read_text())["CUDA_VISIBLE_DEVICES"] == ""  # CPU jobs
    assert "1 jobs did not start" in out
