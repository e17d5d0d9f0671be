"""Launchers that need a program this machine may not have, checked before Hydra starts a sweep: without
it the launcher fails inside Hydra with a traceback ("Could not detect srun")."""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from pspl_lightning.errors import ConfigError

# hydra/launcher option -> (the program it runs, what to do without it)
NEEDS = {"slurm": ("srun", "run the sweep on the cluster's login node, or sweep on this machine with "
                           "hydra/launcher=local_parallel (or with no hydra/launcher: one job at a time)")}


def refuse_unavailable_launcher(overrides: Sequence[str]) -> None:
    """A ``-m`` sweep with ``hydra/launcher=<option>`` whose program is not on ``PATH``: one line, exit 2."""
    if not any(o in ("-m", "--multirun") for o in overrides):
        return
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if key == "hydra/launcher" and value in NEEDS:
            program, advice = NEEDS[value]
            if shutil.which(program) is None:
                raise ConfigError(f"hydra/launcher={value} submits each sweep job through SLURM, but "
                                  f"{program!r} is not on this machine's PATH: {advice}")
