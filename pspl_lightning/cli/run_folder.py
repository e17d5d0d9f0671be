"""The run folder: which checkpoint a run continues from, and the folder it then writes into.

``resume=true`` continues this invocation's own folder when it holds a checkpoint (``hydra.run.dir=X``,
a requeued SLURM job), else the latest run of the task; ``resume=<run folder>`` continues that run;
``ckpt_path=<file>`` starts a new run folder from the file. These are the only ways a run writes into an
existing folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pspl_lightning.errors import ConfigError
from pspl_lightning.legacy import model_config

log = logging.getLogger("pspl_lightning")

# what must be equal for a checkpoint found in a run's own folder to be continued by this run
SAME_RUN_KEYS = ("model", "loss", "optimizer", "schedule", "seed", "degradation", "data.scale",
                 "data.patch_size", "data.batch_size")


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


def resolve_resume(cfg: DictConfig) -> str | None:
    """The checkpoint this run continues from, pointing ``paths.output_dir`` at the resumed run's folder."""
    resume, ckpt_path = cfg.get("resume") or False, cfg.get("ckpt_path")
    output_dir = Path(cfg.paths.output_dir)
    if ckpt_path:
        if resume:
            raise ConfigError("set either resume or ckpt_path, not both")
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return str(ckpt_path)
    own = run_checkpoint(output_dir)
    if own is not None and resume in (True, False):  # this invocation's folder holds a checkpoint
        check_same_run(cfg, own)
        if not resume:
            log.warning("%s already holds %s: continuing that run (requeued job)", output_dir, own)
        run, ckpt = output_dir, own
    elif not resume:
        return None
    elif resume is True:
        run, ckpt = latest_run(Path(cfg.paths.log_dir) / str(cfg.task_name) / "runs", exclude=output_dir)
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
