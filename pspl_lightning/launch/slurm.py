"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, except that a job that ends without a
result (killed, out of memory, requeued more often than ``max_num_timeout``) counts as NaN, as in
``local_parallel``, instead of ending the whole sweep with submitit's traceback; the sweep then ends with
its table of jobs (``cli/sweep_summary.py``), that job marked ``died: no result``, and exit status 4.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _StockSlurmLauncher

from pspl_lightning.launch.local_parallel import _result


class _TolerantJob:
    """A submitit job whose ``results()`` never raises: a job without a result gives a NaN JobReturn."""

    def __init__(self, job: Any, num: int, overrides: list[str]) -> None:
        self.job, self.num, self.overrides = job, num, overrides

    def results(self) -> list[JobReturn]:
        return [_result(self.job, self.num, self.overrides)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)


@contextmanager
def tolerant_results() -> Iterator[None]:
    """While the block runs, the jobs that ``submitit.AutoExecutor.map_array`` submits for a Hydra sweep
    (its arguments: launcher, overrides, dir key, job numbers, ...) report a missing result as NaN."""
    import submitit

    original = submitit.AutoExecutor.map_array

    def map_array(executor: Any, fn: Any, *iterables: Sequence[Any]) -> list[Any]:
        jobs = original(executor, fn, *iterables)
        overrides, nums = iterables[0], iterables[2]
        return [_TolerantJob(job, num, list(ov)) for job, num, ov in zip(jobs, nums, overrides, strict=True)]

    submitit.AutoExecutor.map_array = map_array
    try:
        yield
    finally:
        submitit.AutoExecutor.map_array = original


class SlurmLauncher(_StockSlurmLauncher):
    """The stock SLURM launcher whose sweep survives a job that died (see the module's docstring)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with tolerant_results():
            return super().launch(job_overrides, initial_job_idx)
