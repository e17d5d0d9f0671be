"""Hydra's entry point for ``hydra/launcher=local_parallel``: its config schema and a thin launcher class.

Hydra imports every module under ``hydra_plugins`` at each start, so this one imports nothing heavy and
nothing optional: the launcher itself (``pspl_lightning.launch.local_parallel``) needs the ``sweep`` extra
(hydra-submitit-launcher) and is imported when a sweep uses it. No ``from __future__ import annotations``:
Hydra loads this module without registering it in ``sys.modules``, where dataclasses look string
annotations up.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class LocalParallelConf:
    """``hydra.launcher.*`` of ``hydra/launcher=local_parallel`` (typed: Hydra rejects wrong types)."""

    _target_: str = "hydra_plugins.pspl_launchers.local_parallel.LocalParallelLauncher"
    n_jobs: int | None = None  # jobs at a time; null: visible GPUs // gpus_per_job, or 2 CPU jobs
    gpus_per_job: int | None = None  # null: 1 if a GPU is visible, else 0 (CPU jobs, CUDA hidden)
    visible_gpus: list[int] | None = None  # GPU indices to hand out; null: CUDA_VISIBLE_DEVICES or all
    threads_per_job: int | None = None  # CPU threads per job; null: CPU cores // jobs running at once
    timeout_min: int = 43200  # submitit stops a job after this long (30 days)
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"  # job pickles and stdout/stderr


ConfigStore.instance().store(group="hydra/launcher", name="pspl_local_parallel", node=LocalParallelConf,
                             provider="pspl_lightning")


class LocalParallelLauncher(Launcher):
    """Hands the sweep to ``pspl_lightning.launch.local_parallel.ParallelLocalLauncher``."""

    def __init__(self, **params: Any) -> None:
        try:
            from pspl_lightning.launch.local_parallel import ParallelLocalLauncher
        except ImportError as exc:
            raise ImportError(f"hydra/launcher=local_parallel needs hydra-submitit-launcher: "
                              f"pip install -e '.[sweep]' ({exc})") from None
        self.impl = ParallelLocalLauncher(**{k: OmegaConf.to_container(v, resolve=True)
                                             if OmegaConf.is_config(v) else v for k, v in params.items()})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.impl.launch(job_overrides, initial_job_idx)
