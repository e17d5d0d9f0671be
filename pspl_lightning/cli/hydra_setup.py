"""Where the configs live and the OmegaConf resolvers they use (registered on import)."""

from __future__ import annotations

import math
import netrc
import os
import secrets
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def config_dir() -> str:
    """The ``configs/`` folder: inside the installed wheel, else at the repository root."""
    for candidate in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"no configs/train.yaml next to {_PACKAGE_DIR}: is the package installed correctly?"
    )


def wandb_offline() -> bool:
    """Offline unless W&B can authenticate (WANDB_API_KEY or a netrc login); WANDB_MODE, when set, wins."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"] == "offline"
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return True


def project_root() -> str:
    """``PSPL_ROOT`` if set, else the directory the command was started in."""
    return os.environ.get("PSPL_ROOT") or os.getcwd()


def run_id() -> str:
    """The run folder's name: ``slurm-<job>[_<array task>]-<step>`` under SLURM, so that every rank of a
    job (each started by srun) and the job requeued after preemption share one folder; ``torchrun-<id>``
    under torchrun with a rendezvous id (every rank of it); otherwise the start time plus a random suffix
    (unique even for runs started in the same second)."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    torchrun_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if torchrun_id not in ("", "none") and not job:  # torchrun --rdzv-id (or --standalone): one per job
        return f"torchrun-{torchrun_id}"
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{job}" + (f"_{task}" if task else "") + f"-{os.environ.get('SLURM_STEP_ID', '0')}"
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def register_resolvers() -> None:
    """``${pspl_uid:}``: a random 6-hex suffix, fixed per config (unique run folders within a second);
    ``${pspl_wandb_offline:}``: see :func:`wandb_offline`; ``${pspl_root:}``: see :func:`project_root`
    (usable where Hydra's own ``${hydra:...}`` is not, such as the sweep folder); ``${pspl_run_id:}``: see
    :func:`run_id`; ``${pspl_mul:a,b}``: the integer product (an HR patch = LR patch x scale)."""
    if not OmegaConf.has_resolver("pspl_uid"):
        OmegaConf.register_new_resolver("pspl_uid", lambda: secrets.token_hex(3), use_cache=True)
    if not OmegaConf.has_resolver("pspl_wandb_offline"):
        OmegaConf.register_new_resolver("pspl_wandb_offline", wandb_offline)
    if not OmegaConf.has_resolver("pspl_run_id"):
        OmegaConf.register_new_resolver("pspl_run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("pspl_mul"):
        OmegaConf.register_new_resolver("pspl_mul", lambda *xs: math.prod(int(x) for x in xs))
    if not OmegaConf.has_resolver("pspl_root"):
        OmegaConf.register_new_resolver("pspl_root", project_root, use_cache=True)


register_resolvers()
