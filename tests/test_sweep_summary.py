"""A sweep ends with one table of its jobs (overrides, status, final metric) and exits 4 when a job failed.

The basic launcher runs here as a subprocess sweep; local_parallel (submitit's local executor, a job
process that dies) in tests/test_parallel_sweep.py; a submitit job's result (a JobReturn that came back
from its process, or a job folder without one) through the same functions below.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.utils import JobReturn, JobStatus

from pspl_lightning.cli import sweep_summary
from pspl_lightning.cli.sweep_summary import JobRow, job_row, read_rows, table
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def _job(folder: Path, overrides: list[str], num: int, row: JobRow | None) -> None:
    """A job folder as Hydra and SweepSummary.on_job_end leave it (no row: the job died)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
    if row is not None:
        (folder / sweep_summary.RESULT_FILE).write_text(json.dumps({**row.__dict__,
                                                                    "overrides": list(row.overrides)}))


def test_job_rows_from_what_jobs_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    ok = JobReturn(overrides=["seed=1"], status=JobStatus.COMPLETED, _return_value=27.5)
    assert job_row(ok, 0) == JobRow(0, ("seed=1",), "ok", 27.5)
    nan = JobReturn(overrides=["seed=2"], status=JobStatus.COMPLETED, _return_value=float("nan"))
    monkeypatch.setattr(sweep_summary, "_failure", 3)  # the entry point noted a divergence
    assert job_row(nan, 1) == JobRow(1, ("seed=2",), "failed: diverged", None)
    crashed = JobReturn(overrides=["seed=3"], status=JobStatus.FAILED, _return_value=KeyError("x"))
    assert job_row(crashed, 2).status == "failed: KeyError: 'x'"


def test_the_table_of_a_sweep_shows_every_job_and_what_became_of_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    common = ["trainer=cpu", "logger=csv"]
    _job(tmp_path / "0", [*common, "seed=1"], 0, JobRow(0, (*common, "seed=1"), "ok", 27.51234))
    _job(tmp_path / "1", [*common, "seed=2"], 1, JobRow(1, (*common, "seed=2"), "failed: diverged", None))
    _job(tmp_path / "2", [*common, "seed=3"], 2, None)  # died before its end: no result file
    rows = read_rows(tmp_path)
    assert [r.num for r in rows] == [0, 1, 2] and [r.ok for r in rows] == [True, False, False]
    assert table(rows, "val/psnr_y").splitlines() == [
        "| # | overrides | status | val/psnr_y |",
        "|---|---|---|---|",
        "| 0 | seed=1 | ok | 27.5123 |",
        "| 1 | seed=2 | failed: diverged |  |",
        "| 2 | seed=3 | died: no result (killed, out of memory or a crash; see its train.log) |  |",
        "3 jobs: 1 ok, 2 failed",
    ]
    monkeypatch.setattr(sweep_summary, "_last_sweep", rows)
    assert [r.num for r in sweep_summary.failed_jobs()] == [1, 2]


def test_a_basic_sweep_with_a_failing_job_ends_with_its_table_and_exit_4(sample_root: Path,
                                                                        tmp_path: Path) -> None:
    overrides = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.val_check"))]
    env = {**os.environ, "PSPL_ROOT": str(tmp_path), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pspl_lightning.cli.train", "-m", *overrides,
                           f"data.root={sample_root}", "trainer.max_steps=2", "trainer.val_check_interval=2",
                           "loss.max_weight=-2,2"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    psnr = json.loads((sweep / "1" / "metrics.json").read_text())["val/psnr_y"]
    expected = ["| # | overrides | status | val/psnr_y |", "|---|---|---|---|",
                "| 0 | loss.max_weight=-2 | failed: config or data mistake |  |",
                f"| 1 | loss.max_weight=2 | ok | {psnr:.4f} |", "2 jobs: 1 ok, 1 failed"]
    assert not math.isnan(psnr)
    assert (sweep / "summary.md").read_text().splitlines() == expected
    assert "\n".join(expected) in proc.stdout  # printed once, at the end of the sweep
    assert proc.stderr.strip().splitlines()[-1] == "Sweep: 1 job(s) failed: #0 (the table above)"


def test_a_slurm_job_without_a_result_counts_as_nan(train_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """hydra/launcher=slurm: submitit's results of a job that died raise (the stock launcher then ended the
    sweep with a traceback); here they are a NaN JobReturn, so the sweep ends with its table."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as Stock

    from pspl_lightning.launch.slurm import SlurmLauncher, tolerant_results

    target = train_cfg("hydra/launcher=slurm").hydra.launcher._target_
    assert target == "pspl_lightning.launch.slurm.SlurmLauncher"
    assert issubclass(SlurmLauncher, Stock)

    class FakeJob:  # a submitit job as far as the launcher reads it
        paths = SimpleNamespace(stderr="12_0_log.err")

        def __init__(self, result: JobReturn | Exception) -> None:
            self.result = result

        def results(self) -> list[JobReturn]:
            if isinstance(self.result, Exception):
                raise self.result
            return [self.result]

    ok = JobReturn(overrides=["seed=1"], status=JobStatus.COMPLETED, _return_value=27.0)
    died = submitit.core.utils.UncompletedJobError("Job 12_1 (task: 0) has not produced any output")

    def fake_map_array(executor: object, fn: object, *iterables: list) -> list[FakeJob]:
        return [FakeJob(ok), FakeJob(died)]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    with tolerant_results():  # what Hydra's submitit launcher passes: overrides, dir key, numbers, ...
        jobs = submitit.AutoExecutor.map_array(None, None, [["seed=1"], ["seed=2"]], ["hydra.sweep.dir"] * 2,
                                               [0, 1], ["job_id_for_0", "job_id_for_1"], [{}, {}])
    assert submitit.AutoExecutor.map_array is fake_map_array  # put back
    assert jobs[0].results() == [ok]
    (nan,) = jobs[1].results()
    assert nan.status == JobStatus.COMPLETED and nan.overrides == ["seed=2"] and math.isnan(nan.return_value)
