"""Every option of every config group composes, and its object instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from pspl_lightning.cli.build import build_module
from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.cli.run_folder import resolved_config

CONFIGS = Path(config_dir())
GROUPS = ["model", "loss", "schedule", "data", "trainer", "logger", "callbacks", "debug", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in _options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_group_option_composes_and_instantiates(train_cfg, group: str, option: str) -> None:
    required = ["init_from=null"] if group == "experiment" and "_x2_" not in option else []
    cfg = train_cfg(f"{group}={option}", *required, tiny=False)
    resolved_config(cfg)  # every interpolation resolves
    if group == "model" and cfg.model._target_.endswith("zoo.spandrel_net"):
        return  # the zoo's networks are built at full size by tests/test_zoo.py (needs the zoo extra)
    if group == "model":
        net = build_module(cfg).net
        assert isinstance(net, torch.nn.Module)
    elif group == "loss":
        assert callable(instantiate(cfg.loss))
    elif group in ("logger", "callbacks"):
        for entry in (cfg[group] or {}).values():
            if entry is not None:
                instantiate(entry)
    elif group == "trainer":
        needs_gpu = cfg.trainer.accelerator in ("gpu", "cuda")
        if needs_gpu and not torch.cuda.is_available():
            pytest.skip("GPU trainer config needs a GPU to instantiate")
        instantiate(cfg.trainer)
    assert cfg.trainer.max_steps > 0


def test_every_group_has_options() -> None:
    for group in ("model", "loss", "schedule", "data", "trainer", "logger", "callbacks"):
        assert _options(group), f"configs/{group}/ is empty"
