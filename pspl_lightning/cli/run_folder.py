"""The run folder: which checkpoint a run continues from, and the folder it then writes into.

``resume=true`` continues this invocation's own folder when it holds a checkpoint (``hydra.run.dir=X``,
a requeued SLURM job), else the latest run of the task; ``resume=<run folder>`` continues that run;
``ckpt_path=<file>`` starts a new run folder from the file. These are the only ways a run writes into an
existing folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pspl_lightning.errors import ConfigError
from pspl_lightning.legacy import model_config

log = logging.getLogger("pspl_lightning")

# what must be equal for a checkpoint found in a run's own folder to be continued by this run
SAME_RUN_KEYS = ("model", "loss", "optimizer", "schedule", "seed", "degradation", "data.scale",
                 "data.patch_size", "data.batch_size")


class KeepRunRecord(Callback):
    """Hydra callback: a command whose run folder (``hydra.run.dir``) already holds a run's checkpoint
    continues that run (resume, a requeued job) or is refused; either way Hydra must not rewrite the run's
    record of its command (``.hydra/*.yaml``), which it does before the task starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if run_checkpoint(Path(str(config.hydra.run.dir))) is not None:
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = None


def run_checkpoint(run_dir: Path) -> Path | None:
    """The newest of a run folder's ``checkpoints/last.ckpt`` and SLURM ``hpc_ckpt_*.ckpt`` files."""
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def latest_run(runs_dir: Path, exclude: Path | None = None) -> tuple[Path, Path]:
    """The most recently written run folder under ``runs_dir`` holding a checkpoint, and the checkpoint."""
    found = []
    if runs_dir.is_dir():
        for run in runs_dir.iterdir():
            if run.is_dir() and (exclude is None or run.resolve() != exclude.resolve()):
                ckpt = run_checkpoint(run)
                if ckpt is not None:
                    found.append((ckpt.stat().st_mtime, run, ckpt))
    if not found:
        raise ConfigError(
            f"resume=true: no run folder under {runs_dir} holds checkpoints/last.ckpt; pass "
            f"resume=<run folder> or ckpt_path=<file>"
        )
    _, run, ckpt = max(found)
    return run, ckpt


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain data with interpolations resolved (Hydra's own node left out)."""
    own = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(own, resolve=True)  # an unused ??? stays the string "???"


class NothingToTrain(Exception):  # noqa: N818 - not an error: the command ends with status 0
    """A resumed run already at ``trainer.max_steps``: one line, exit status 0, the run's files untouched."""

    def __init__(self, message: str, run: Path) -> None:
        super().__init__(message)
        self.run = run


def resolve_resume(cfg: DictConfig) -> str | None:
    """The checkpoint this run continues from, pointing ``paths.output_dir`` at the resumed run's folder and
    making ``cfg`` the run's recorded config (``resume_rules``); :class:`NothingToTrain` when it is done."""
    resume, ckpt_path = cfg.get("resume") or False, cfg.get("ckpt_path")
    output_dir = Path(cfg.paths.output_dir)
    if ckpt_path:
        if resume:
            raise ConfigError("set either resume or ckpt_path, not both")
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        _take_recorded_config(cfg, Path(ckpt_path), f"ckpt_path={ckpt_path}")
        return str(ckpt_path)
    own = run_checkpoint(output_dir)
    if own is not None and resume in (True, False):  # this invocation's folder holds a checkpoint
        if not resume:  # a requeued job, or a folder named again with hydra.run.dir: only its own run
            check_same_run(cfg, own)
        run, ckpt = output_dir, own
        what = "resume=true" if resume else f"{output_dir} (a run folder continued by a requeued job)"
    elif not resume:
        return None
    elif resume is True:
        run, ckpt = latest_run(Path(cfg.paths.log_dir) / str(cfg.task_name) / "runs", exclude=output_dir)
        what = f"resume=true ({run})"
    else:
        run, ckpt = Path(str(resume)), run_checkpoint(Path(str(resume)))
        if ckpt is None:
            raise ConfigError(f"resume={resume}: no checkpoints/last.ckpt in that folder")
        what = f"resume={resume}"
    step = _take_recorded_config(cfg, ckpt, what)
    max_steps = cfg.trainer.max_steps
    if isinstance(max_steps, int) and step >= max_steps:  # (a bad value is refused by the config checks)
        raise NothingToTrain(f"Nothing left to train: {ckpt} is at step {step} and trainer.max_steps="
                             f"{max_steps}; the run is unchanged (raise trainer.max_steps to train on)", run)
    if own is not None and not resume:
        log.warning("%s already holds %s: continuing that run (requeued job)", output_dir, own)
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


def finished_run(run: Path, own_folder: Path) -> dict[str, float]:
    """The metrics of a run that had nothing left to train, read without writing anything; this command's
    own folder (Hydra's record of the command) is removed when it is not the run's."""
    if own_folder.resolve() != run.resolve() and own_folder.is_dir() and \
            {p.name for p in own_folder.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(own_folder)
    metrics = run / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def _take_recorded_config(cfg: DictConfig, ckpt: Path, what: str) -> int:
    """Make ``cfg`` the config recorded in ``ckpt`` plus this command's free keys (resume_rules); its step."""
    from pspl_lightning.cli.resume_rules import (
        defaults_config,
        hydra_overrides,
        override_keys,
        recorded_config,
        take_recorded_config,
    )

    recorded, step = recorded_config(ckpt)
    if recorded is None:
        log.warning("%s records no run config (pspl_config): continuing with this command's", ckpt)
        return step
    overrides, config_name = hydra_overrides()
    take_recorded_config(cfg, recorded, override_keys(overrides), defaults_config(config_name), what)
    return step


def check_same_run(cfg: DictConfig, ckpt: Path) -> None:
    """Refuse to continue a folder's checkpoint that another configuration wrote (a reused run folder)."""
    import torch  # only when a folder already holds a checkpoint

    saved = dict(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("pspl_config") or {})
    if isinstance(saved.get("model"), dict):  # an older run's model config may hold init_from
        saved["model"] = model_config(saved["model"])
    current = resolved_config(cfg)
    for key in SAME_RUN_KEYS:
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
