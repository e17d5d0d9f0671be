"""Hydra callbacks of the entry points: a run folder that cannot be created is one clear line, exit 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pspl_lightning.cli.failures import make_run_folder


def _make_folder(folder: Path, option: str) -> None:
    try:
        make_run_folder(folder) if option == "hydra.run.dir" else folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"Cannot create the run folder {folder} ({exc.strerror or exc}): choose another with "
              f"{option}=<folder>, or move outputs/ with PSPL_ROOT=<folder>", file=sys.stderr)
        sys.exit(2)


class RunFolderCheck(Callback):
    """Creates the run (or sweep) folder before Hydra does, so a folder that cannot be made is reported as
    one line naming it and the option that sets it, instead of Hydra's traceback. A run folder is
    remembered (``failures.make_run_folder``): a mistake of the command removes it again."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _make_folder(Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _make_folder(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")
