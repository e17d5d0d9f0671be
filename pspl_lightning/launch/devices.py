"""Which GPUs and how many CPU threads each of N concurrent sweep jobs gets (no torch import at load)."""

from __future__ import annotations

import os
from collections.abc import Sequence


class LaunchConfigError(ValueError):
    """A ``hydra.launcher`` value that cannot work on this machine; the message names the key."""


def cpu_cores() -> int:
    """CPU cores this process may use: its affinity mask (a container's share), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def visible_gpus(explicit: Sequence[int] | None = None) -> list[int]:
    """GPU indices to share out: ``explicit``, else ``CUDA_VISIBLE_DEVICES``, else every GPU torch sees."""
    if explicit is not None:
        return [int(i) for i in explicit]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        entries = [e.strip() for e in env.split(",") if e.strip()]
        if not all(e.isdigit() for e in entries):
            raise LaunchConfigError(f"CUDA_VISIBLE_DEVICES={env} holds no plain GPU indices; give them as "
                                    f"hydra.launcher.visible_gpus=[0,1,...]")
        return [int(e) for e in entries]
    import torch

    return list(range(torch.cuda.device_count()))


def plan_slots(n_jobs: int | None, gpus_per_job: int | None, gpus: Sequence[int]) -> list[list[int]]:
    """The GPU set of each concurrent job slot: disjoint groups of ``gpus_per_job`` from ``gpus``.

    ``gpus_per_job=None``: 1 when any GPU is visible, else 0 (CPU jobs). ``n_jobs=None``: as many slots
    as the GPUs fill, or 2 CPU jobs. A slot with no GPU is a CPU job (CUDA hidden from it).
    """
    per_job = (1 if gpus else 0) if gpus_per_job is None else gpus_per_job
    if per_job < 0:
        raise LaunchConfigError(f"hydra.launcher.gpus_per_job={per_job}: expected 0 (CPU jobs) or more")
    if n_jobs is None:
        n_jobs = len(gpus) // per_job if per_job else 2
        if n_jobs == 0:
            raise LaunchConfigError(f"hydra.launcher.gpus_per_job={per_job}: only {len(gpus)} GPU(s) visible "
                                    f"({list(gpus)})")
    if n_jobs < 1:
        raise LaunchConfigError(f"hydra.launcher.n_jobs={n_jobs}: expected at least 1 job at a time")
    if n_jobs * per_job > len(gpus):
        raise LaunchConfigError(f"hydra.launcher.n_jobs={n_jobs} x gpus_per_job={per_job} needs "
                                f"{n_jobs * per_job} GPUs; {len(gpus)} visible ({list(gpus)})")
    return [list(gpus[k * per_job:(k + 1) * per_job]) for k in range(n_jobs)]


def threads_per_job(concurrent: int, threads: int | None = None, cores: int | None = None) -> int:
    """CPU threads of each job: ``threads`` if given, else the cores split evenly (at least 1)."""
    if threads is not None:
        if threads < 1:
            raise LaunchConfigError(f"hydra.launcher.threads_per_job={threads}: expected at least 1 or null")
        return threads
    return max(1, (cores or cpu_cores()) // max(1, concurrent))
