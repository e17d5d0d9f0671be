"""Run Hydra sweep jobs N at a time on one machine, each in a fresh process with its own GPUs or CPU share.

Built on hydra-submitit-launcher's local launcher: submitit's ``LocalExecutor`` starts every job as a new
Python process (so ``CUDA_VISIBLE_DEVICES`` and the thread count take effect before CUDA or OpenMP start)
and returns its result through a pickle. The stock launcher submits every job at once, all on the same
GPUs, and gives up the sweep when one job's process dies; this one keeps ``n_jobs`` running, hands each
the GPU set of a free slot, and reports a dead job as NaN (the sweep goes on, as ``pspl-train`` does
for a job that fails its checks).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.types import TaskFunction
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
from omegaconf import DictConfig

from pspl_lightning.launch.devices import LaunchConfigError, plan_slots, threads_per_job, visible_gpus

log = logging.getLogger(__name__)

SLOT_ENV = "PSPL_LAUNCH_SLOT"  # the job's slot number, set by the launcher for the job's process
THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
RECORD_FILE = "launch.json"  # what a job saw, in its run folder
POLL_S = 0.2


def job_environment(job_num: int) -> dict[str, Any]:
    """What this job process was given: its slot, GPUs, threads, process id and host."""
    import torch

    return {"job": job_num, "slot": int(os.environ.get(SLOT_ENV, "-1")),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
            "cuda_device_count": torch.cuda.device_count(), "pid": os.getpid(), "host": socket.gethostname()}


def recorded_task(task: TaskFunction, job_num: int, cfg: DictConfig) -> Any:
    """Run ``task``, writing ``launch.json`` (environment, start and end time) into the job's run folder."""
    record = {**job_environment(job_num), "start": time.time(), "end": None}
    path = Path(HydraConfig.get().runtime.output_dir) / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    log.info("Sweep job %d (slot %d): CUDA_VISIBLE_DEVICES=%r, %d torch threads, pid %d", job_num,
             record["slot"], record["CUDA_VISIBLE_DEVICES"], record["torch_threads"], record["pid"])
    try:
        return task(cfg)
    finally:
        record["end"] = time.time()
        path.write_text(json.dumps(record, indent=1))


@contextmanager
def _environ(updates: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the processes started inside the block, then restore them."""
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class ParallelLocalLauncher(LocalLauncher):
    """``hydra/launcher=local_parallel``: ``n_jobs`` concurrent jobs, ``gpus_per_job`` GPUs each."""

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict[type, Singleton]) -> JobReturn:
        """The job, in its own process: the stock job body with the environment recorded."""
        task = self.task_function
        assert task is not None
        self.task_function = functools.partial(recorded_task, task, job_num)
        try:
            return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        finally:
            self.task_function = task

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Keep up to ``n_jobs`` jobs running, each with a free slot's GPUs; return results in job order."""
        import submitit

        assert self.config is not None
        params = self.params
        per_job = params.get("gpus_per_job")
        try:
            gpus = visible_gpus(params.get("visible_gpus")) if per_job != 0 else []
            slots = plan_slots(params.get("n_jobs"), per_job, gpus)
            threads = threads_per_job(min(len(slots), len(job_overrides)), params.get("threads_per_job"))
        except LaunchConfigError as exc:  # one line, as pspl-train reports a bad config, no traceback
            log.error("Invalid configuration: %s", exc)
            raise SystemExit(2) from None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        executor = submitit.LocalExecutor(folder=params["submitit_folder"])
        executor.update_parameters(timeout_min=params["timeout_min"])
        devices = " | ".join(",".join(map(str, s)) for s in slots) if slots[0] else "no GPU"
        log.info("Local parallel sweep: %d jobs, %d at a time (GPUs: %s), %d CPU threads each; in %s",
                 len(job_overrides), len(slots), devices, threads, sweep_dir)

        pool = _SlotPool(executor, self, slots, threads)
        queue = deque((initial_job_idx + i, list(ov)) for i, ov in enumerate(job_overrides))
        with _sigterm_forwarded(pool) as stop:
            try:
                while (queue and not stop.requested) or pool.running:
                    while queue and pool.has_free_slot() and not stop.requested:
                        pool.start(*queue.popleft())
                    if not pool.collect_finished():
                        time.sleep(POLL_S)
            except BaseException:
                pool.cancel_all()
                raise
        if stop.requested:
            log.error("SIGTERM: the running jobs were asked to save checkpoints/last.ckpt and stop; %d jobs "
                      "did not start", len(queue))
            raise SystemExit(143)
        failed = [n for n, r in sorted(pool.results.items()) if _is_nan(r)]
        if failed:
            log.error("Sweep done; jobs %s failed (NaN result): see their train.log", failed)
        return [pool.results[initial_job_idx + i] for i in range(len(job_overrides))]


class _SlotPool:
    """Running jobs and the slots (GPU sets) they hold; a finished job frees its slot for the next."""

    def __init__(self, executor: Any, launcher: ParallelLocalLauncher, slots: list[list[int]],
                 threads: int) -> None:
        self.executor, self.launcher, self.slots, self.threads = executor, launcher, slots, threads
        self.free = list(range(len(slots)))
        self.running: dict[int, tuple[Any, int, list[str]]] = {}  # job number -> (job, slot, overrides)
        self.results: dict[int, JobReturn] = {}

    def has_free_slot(self) -> bool:
        return bool(self.free)

    def start(self, num: int, overrides: list[str]) -> None:
        """Start job ``num`` in a new process on the lowest free slot."""
        slot = self.free.pop(0)
        gpus = self.slots[slot]
        self.executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=gpus)
        env = {SLOT_ENV: str(slot), **dict.fromkeys(THREAD_ENVS, str(self.threads))}
        with _environ(env):  # submitit copies os.environ into the new process
            job = self.executor.submit(self.launcher, overrides, "hydra.sweep.dir", num, f"job_id_for_{num}",
                                       Singleton.get_state())
        # submitit waits up to 15 s for a finished job's result file, for network file systems; a local job
        # writes it before its process exits, so a job that died without one is known at once and its slot
        # is free for the next job (without this a killed job held its slot idle for 15 s)
        job._results_timeout_s = 0
        self.running[num] = (job, slot, overrides)
        log.info("#%d started (slot %d, CUDA_VISIBLE_DEVICES=%r): %s", num, slot, ",".join(map(str, gpus)),
                 " ".join(filter_overrides(overrides)))

    def collect_finished(self) -> bool:
        """Record the results of the jobs that ended and free their slots; False if none had ended."""
        done = [num for num, (job, _, _) in self.running.items() if job.done()]
        for num in done:
            job, slot, overrides = self.running.pop(num)
            self.free = sorted([*self.free, slot])
            self.results[num] = _result(job, num, overrides)
        return bool(done)

    def cancel_all(self) -> None:
        for job, _, _ in self.running.values():
            job.cancel(check=False)

    def signal_all(self, signum: int) -> None:
        for job, _, _ in self.running.values():
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(job.job_id), signum)  # a local job's id is its controller's pid


def _result(job: Any, num: int, overrides: list[str]) -> JobReturn:
    """The job's JobReturn; a job whose process died without one (killed, out of memory) counts as NaN."""
    try:
        result = job.results()[0]
    except Exception as exc:  # submitit's UncompletedJobError / FailedJobError
        log.error("#%d (%s) ended without a result: %s (its output: %s)", num,
                  " ".join(filter_overrides(overrides)), str(exc).splitlines()[0], job.paths.stderr)
        return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=float("nan"))
    log.info("#%d finished: %s", num, result._return_value if result.status == JobStatus.COMPLETED
             else f"failed ({type(result._return_value).__name__}: {result._return_value})")
    return result


def _is_nan(result: JobReturn) -> bool:
    """A completed job whose objective is NaN: the mark of a failed job in this project's sweeps."""
    value = result._return_value
    return result.status == JobStatus.COMPLETED and isinstance(value, float) and math.isnan(value)


class _StopRequest:
    requested = False


@contextmanager
def _sigterm_forwarded(pool: _SlotPool) -> Iterator[_StopRequest]:
    """While the block runs, SIGTERM to the launcher goes to every running job (each saves last.ckpt and
    stops: submitit's job controller forwards it) and no new job starts."""
    stop = _StopRequest()

    def forward(signum: int, frame: Any) -> None:
        stop.requested = True
        pool.signal_all(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
