"""``pspl-train``: compose the Hydra config, build data/network/loss/trainer, fit, validate, report."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from pspl_lightning.callbacks.guards import TrainingDiverged
from pspl_lightning.callbacks.results import FinalResults
from pspl_lightning.checkpointing import AtomicCheckpointIO, latest_run, run_checkpoint
from pspl_lightning.cli.checks import ConfigError, check_train_config
from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.fast_paths import prepare_network
from pspl_lightning.module import SRModule

log = logging.getLogger("pspl_lightning")


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group, skipping entries set to null."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def _hydra_runtime() -> tuple[bool, str, str]:
    """(is a multirun job, the job's override string, the sweep folder name); neutral outside a Hydra app."""
    try:
        hc = HydraConfig.get()
    except ValueError:  # composed directly (tests, notebooks)
        return False, "", ""
    multirun = hc.mode == RunMode.MULTIRUN
    return multirun, hc.job.override_dirname, Path(hc.sweep.dir).name if multirun else ""


def _launched_externally() -> bool:
    """True when SLURM (srun) or torchrun started one process per rank, so Lightning launches nothing."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def adapt_to_launch(cfg: DictConfig) -> None:
    """Name the run after its overrides, group sweep jobs in W&B, and defuse the ``-m`` + ``ddp`` trap.

    Lightning's ``ddp`` re-runs the command line for ranks > 0; under a Hydra multirun that command is the
    whole sweep, so every rank would start its own sweep. Each job then spawns its ranks instead.
    """
    multirun, overrides, sweep_name = _hydra_runtime()
    with open_dict(cfg):
        cfg.run_name = cfg.get("run_name") or overrides or str(cfg.task_name)
        wandb_cfg = (cfg.get("logger") or {}).get("wandb")
        if wandb_cfg is not None and multirun and not wandb_cfg.get("group"):
            wandb_cfg.group = sweep_name
        strategy = str(cfg.trainer.get("strategy", "auto"))
        if multirun and strategy.startswith("ddp") and "spawn" not in strategy and not _launched_externally():
            log.warning("Multirun with trainer.strategy=%s: using ddp_spawn so that each sweep job runs its "
                        "own ranks (ddp would re-run the whole sweep in every rank)", strategy)
            cfg.trainer.strategy = strategy.replace("ddp", "ddp_spawn", 1)


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain data with interpolations resolved (Hydra's own node left out)."""
    return {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in cfg if k != "hydra"}


def build_network(cfg: DictConfig, warm_start: bool = True) -> torch.nn.Module:
    """Instantiate ``cfg.model``; warm-start from ``model.init_from`` and apply ``cfg.fast`` options.

    ``warm_start=False`` (a resumed run, whose checkpoint holds the weights) skips ``init_from``.
    """
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("init_from", None)
    net = instantiate(model_cfg)
    if warm_start and cfg.model.get("init_from"):
        from pspl_lightning.archs.warm_start import load_matching_weights

        load_matching_weights(net, cfg.model.init_from)
    fast = cfg.get("fast") or {}
    return prepare_network(net, channels_last=bool(fast.get("channels_last", False)),
                           compile=bool(fast.get("compile", False)))


def resolve_resume(cfg: DictConfig) -> str | None:
    """The checkpoint this run continues from, pointing ``paths.output_dir`` at the resumed run's folder.

    ``resume=true``: the latest run of this task with a checkpoint; ``resume=<run folder>``: that run;
    ``ckpt_path=<file>``: a new run folder that starts from the file. A run folder that already holds a
    checkpoint (a requeued SLURM job, whose folder is named after the job) continues by itself. These
    are the only ways a run writes into an existing folder.
    """
    resume, ckpt_path = cfg.get("resume") or False, cfg.get("ckpt_path")
    output_dir = Path(cfg.paths.output_dir)
    if ckpt_path:
        if resume:
            raise ConfigError("set either resume or ckpt_path, not both")
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return str(ckpt_path)
    if not resume:
        own = run_checkpoint(output_dir)
        if own is not None:
            _check_same_run(cfg, own)
            log.warning("%s already holds %s: continuing that run (requeued job)", output_dir, own)
        return str(own) if own else None
    if resume is True:
        try:
            run, ckpt = latest_run(Path(cfg.paths.log_dir) / str(cfg.task_name) / "runs", exclude=output_dir)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
    else:
        run, ckpt = Path(str(resume)), run_checkpoint(Path(str(resume)))
        if ckpt is None:
            raise ConfigError(f"resume={resume}: no checkpoints/last.ckpt in that folder")
    if run.resolve() != output_dir.resolve():  # this invocation's own folder keeps its command line only
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "resumed_into.txt").write_text(f"{run}\n")
        handler = logging.FileHandler(run / "train.log")  # the resumed run's log continues in its folder
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logging.getLogger().addHandler(handler)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    _resume_wandb_run(cfg, run)
    log.info("Resuming %s from %s", run, ckpt)
    return str(ckpt)


_SAME_RUN_KEYS = ("model", "loss", "optimizer", "schedule", "seed", "data.scale", "data.patch_size",
                  "data.batch_size")


def _check_same_run(cfg: DictConfig, ckpt: Path) -> None:
    """Refuse to continue a folder's checkpoint that another configuration wrote (a reused run folder)."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("pspl_config") or {}
    current = resolved_config(cfg)
    for key in _SAME_RUN_KEYS:
        old, new = (OmegaConf.select(OmegaConf.create(c), key, default=None) for c in (saved, current))
        if old is not None and old != new:
            raise ConfigError(
                f"{cfg.paths.output_dir} holds a checkpoint of another run ({key} was {old}, now {new}); "
                f"start in a new folder (hydra.run.dir=...) or continue it with resume=<folder>"
            )


def _resume_wandb_run(cfg: DictConfig, run: Path) -> None:
    """Continue the resumed run's W&B run (same id) instead of starting a new one."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    runs = sorted((run / "wandb").glob("*run-*-*"), key=lambda p: p.stat().st_mtime) if wandb_cfg else []
    if runs:
        with open_dict(cfg):
            wandb_cfg.id = runs[-1].name.rsplit("-", 1)[-1]
            wandb_cfg.resume = "allow"


def finish_wandb(failed: bool = False) -> None:
    """Close the W&B run of this process so the next job of a sweep starts its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as ``cfg`` says, end with a validation pass, write ``metrics.json``; return its metrics."""
    check_train_config(cfg)
    adapt_to_launch(cfg)
    ckpt_path = resolve_resume(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    net = build_network(cfg, warm_start=ckpt_path is None)
    module = SRModule(
        net=net,
        loss=instantiate(cfg.loss),
        scale=cfg.data.scale,
        optimizer=instantiate(cfg.optimizer),
        lr_milestones=cfg.schedule.lr_milestones,
        lr_gamma=cfg.schedule.lr_gamma,
        val_set_names=datamodule.val_set_names,
        run_config=resolved_config(cfg),
        on_nonfinite=cfg.get("on_nonfinite", "stop"),
    )
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"))
    callbacks: list[Callback] = _instantiate_group(cfg.get("callbacks"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    callbacks.append(FinalResults(output_dir))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     default_root_dir=str(output_dir), plugins=[AtomicCheckpointIO()])
    for lg in loggers:
        lg.log_hyperparams(module.run_config)

    log.info("Training %s with %s for %d steps; outputs in %s", type(module.net).__name__,
             type(module.loss).__name__, trainer.max_steps, output_dir)
    status = "failed"
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        status = "success"
    finally:
        for lg in loggers:
            lg.finalize(status)
        finish_wandb(failed=status != "success")
    metrics_file = output_dir / "metrics.json"
    if not metrics_file.is_file():
        return {}
    metrics = json.loads(metrics_file.read_text())  # written by rank 0, also under ddp_spawn
    summary = ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items() if k.count("/") == 1)
    log.info("Final validation at step %d: %s (in %s)", metrics["global_step"], summary, metrics_file)
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    failure: tuple[str, int] | None = None
    try:
        metrics = train(cfg)
    except ConfigError as exc:
        failure = (f"Invalid configuration: {exc}", 2)
    except TrainingDiverged as exc:
        failure = (f"Training stopped: {exc}", 3)
    except SIGTERMException:
        failure = ("Stopped by SIGTERM after saving checkpoints/last.ckpt; continue with resume=true", 143)
    if failure is None:
        return metrics.get("val/psnr_y")  # the objective a Hydra sweeper (Optuna) maximises
    log.error(failure[0])
    if _hydra_runtime()[0]:  # in a sweep, one failed job must not end the others: NaN marks it failed
        return float("nan")
    sys.exit(failure[1])


def main() -> None:
    """Console entry point of ``pspl-train``."""
    _hydra_main()


if __name__ == "__main__":
    main()
