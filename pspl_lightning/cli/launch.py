"""How this process was launched (a Hydra sweep job, SLURM, torchrun) and what that changes in a run."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from pspl_lightning.errors import ConfigError

log = logging.getLogger("pspl_lightning")


def hydra_runtime() -> tuple[bool, str, str]:
    """(is a multirun job, the job's override string, the sweep folder name); neutral outside a Hydra app."""
    try:
        hc = HydraConfig.get()
    except ValueError:  # composed directly (tests, notebooks)
        return False, "", ""
    multirun = hc.mode == RunMode.MULTIRUN
    return multirun, hc.job.override_dirname, Path(hc.sweep.dir).name if multirun else ""


def launched_externally() -> bool:
    """True when SLURM (srun) or torchrun started one process per rank, so Lightning launches nothing."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def launched_rank() -> int:
    """This process's global rank as its launcher announced it before any process group exists: torchrun's
    ``RANK``, srun's ``SLURM_PROCID`` (several tasks), or Lightning's own launcher's children (``LOCAL_RANK``
    and ``NODE_RANK``, exact for one process per node or one node); 0 for a single process."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("LOCAL_RANK", "0")) + int(os.environ.get("NODE_RANK", "0"))


def rank_overrides(argv: list[str]) -> list[str]:
    """Hydra overrides that keep a rank > 0 from writing into the run folder (only global rank 0 writes
    run files: ``.hydra/`` and the log; the ranks would race on them) and from logging every line again."""
    if launched_rank() == 0:
        return []
    wanted = {"hydra.output_subdir": "null", "hydra/job_logging": "disabled"}
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in argv}
    return [f"{key}={value}" for key, value in wanted.items() if key not in given]


def refuse_unshared_torchrun_folder(argv: list[str]) -> None:
    """torchrun with several processes and no shared ``hydra.run.dir``: every rank would name its own
    folder (a timestamp and a random suffix), write its own run and resume from its own checkpoint."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    if ("RANK" in os.environ and world > 1 and run_id in ("", "none") and not multirun
            and not any(arg.startswith("hydra.run.dir=") for arg in argv)):
        raise ConfigError(f"torchrun started {world} processes: give every rank the same "
                          f"hydra.run.dir=<shared folder> (or torchrun --rdzv-id=<id>), so that they write "
                          f"and resume one run")


def adapt_to_launch(cfg: DictConfig) -> None:
    """Name the run after its overrides, group sweep jobs in W&B, and defuse the ``-m`` + ``ddp`` trap.

    Lightning's ``ddp`` re-runs the command line for ranks > 0; under a Hydra multirun that command is the
    whole sweep, so every rank would start its own sweep. Each job then spawns its ranks instead.
    """
    multirun, overrides, sweep_name = hydra_runtime()
    with open_dict(cfg):
        cfg.run_name = cfg.get("run_name") or overrides or str(cfg.task_name)
        wandb_cfg = (cfg.get("logger") or {}).get("wandb")
        if wandb_cfg is not None and multirun and not wandb_cfg.get("group"):
            wandb_cfg.group = sweep_name
        strategy = str(cfg.trainer.get("strategy", "auto"))
        if multirun and strategy.startswith("ddp") and "spawn" not in strategy and not launched_externally():
            log.warning("Multirun with trainer.strategy=%s: using ddp_spawn so that each sweep job runs its "
                        "own ranks (ddp would re-run the whole sweep in every rank)", strategy)
            cfg.trainer.strategy = strategy.replace("ddp", "ddp_spawn", 1)


def finish_wandb(failed: bool = False) -> None:
    """Close the W&B run of this process so the next job of a sweep starts its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
