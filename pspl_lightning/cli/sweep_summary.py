"""The end of a sweep (``-m``): one table of its jobs (overrides, status, final metric), and an exit status
that says whether any job failed.

Every job writes ``job_result.json`` into its folder when it ends (:meth:`SweepSummary.on_job_end`, which
Hydra runs in the job's own process with every launcher: in the sweep's process for ``basic``, in the
job's submitit process for ``local_parallel`` and ``slurm``); the sweep's process reads them all when the
sweep ends. A job folder without the file is a job that died (killed, out of memory, a crash).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("pspl_lightning")

RESULT_FILE = "job_result.json"
EXIT_SWEEP_FAILED = 4  # pspl-train -m: at least one job failed (the table says which)
# what a job's exit status (the one it would have had alone) means in the table
FAILURES = {2: "failed: config or data mistake", 3: "failed: diverged", 130: "stopped by Ctrl-C",
            143: "stopped by SIGTERM"}
_failure: int | None = None  # this job's exit status, noted by the entry point (note_failure)
_last_sweep: list[JobRow] | None = None


@dataclass(frozen=True)
class JobRow:
    """One job of a sweep as its table shows it."""

    num: int
    overrides: tuple[str, ...]
    status: str
    value: float | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def note_failure(exit_status: int) -> None:
    """Called by a sweep job's entry point when it fails with one line: the kind of failure for its row."""
    global _failure
    _failure = exit_status


def job_row(job_return: JobReturn, num: int) -> JobRow:
    """The row of a job from what its task returned (NaN: a failure the entry point reported)."""
    overrides = tuple(job_return.overrides or ())
    if job_return.status == JobStatus.FAILED:
        err = job_return._return_value
        return JobRow(num, overrides, f"failed: {type(err).__name__}: {err}".splitlines()[0], None)
    value = job_return._return_value
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is not None and math.isnan(number):
        return JobRow(num, overrides, FAILURES.get(_failure or 0, "failed"), None)
    return JobRow(num, overrides, "ok", number)


def read_rows(sweep_dir: Path) -> list[JobRow]:
    """The rows of every job folder under ``sweep_dir`` (a folder with ``.hydra/overrides.yaml``), by job
    number."""
    rows = []
    for record in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        folder = record.parent.parent
        result = folder / RESULT_FILE
        if result.is_file():
            data = json.loads(result.read_text())
            rows.append(JobRow(int(data["num"]), tuple(data["overrides"]), data["status"], data["value"]))
            continue
        hydra_yaml = folder / ".hydra" / "hydra.yaml"
        num = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.num", default=-1) \
            if hydra_yaml.is_file() else -1
        overrides = tuple(str(o) for o in OmegaConf.load(record))
        rows.append(JobRow(int(num), overrides, "died: no result (killed, out of memory or a crash; see its "
                                                  "train.log)", None))
    return sorted(rows, key=lambda r: r.num)


def table(rows: list[JobRow], metric: str) -> str:
    """The rows as a Markdown table: each job's own overrides (those not common to every job), status and
    ``metric`` (the sweep's objective)."""
    common = set.intersection(*(set(r.overrides) for r in rows)) if len(rows) > 1 else set()
    lines = [f"| # | overrides | status | {metric} |", "|---|---|---|---|"]
    for r in rows:
        value = "" if r.value is None else f"{r.value:.4f}"
        own = " ".join(o for o in r.overrides if o not in common)
        lines.append(f"| {r.num} | {own} | {r.status} | {value} |")
    failed = sum(not r.ok for r in rows)
    lines.append(f"{len(rows)} jobs: {len(rows) - failed} ok, {failed} failed")
    return "\n".join(lines)


def failed_jobs() -> list[JobRow]:
    """The failed jobs of the sweep this process ran (empty when it ran none)."""
    return [r for r in _last_sweep or [] if not r.ok]


class SweepSummary(Callback):
    """Hydra callback: each job records its result in its folder; the sweep ends with the table of all."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _failure
        _failure = None

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        row = job_row(job_return, int(config.hydra.job.num))
        folder = Path(str(config.hydra.runtime.output_dir))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RESULT_FILE).write_text(json.dumps({**row.__dict__, "overrides": list(row.overrides)}))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _last_sweep
        sweep_dir = Path(str(config.hydra.sweep.dir))
        _last_sweep = read_rows(sweep_dir)
        metric = str(OmegaConf.select(config, "optimized_metric", default="metric"))
        text = table(_last_sweep, metric)
        (sweep_dir / "summary.md").write_text(text + "\n")
        print(f"Sweep {sweep_dir}:\n{text}", flush=True)
