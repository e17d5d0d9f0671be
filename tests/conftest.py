"""Shared fixtures: the sample set built once per session, and composed training configs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Explicitly, whatever the caller's shell says: tests never log to W&B unless they set the mode themselves.
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_SILENT"] = "true"

from pspl_lightning.launch.devices import cpu_cores  # noqa: E402  - imports no torch

# Under pytest-xdist (make test: one worker per core) each worker and every process it starts gets its
# share of the cores, set before torch is imported: two workers of two OpenMP threads each on two cores spin
# against each other. The same count in a test's process and its subprocesses keeps bit-for-bit comparisons
# valid.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, cpu_cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from pspl_lightning.cli.hydra_setup import config_dir  # noqa: E402
from pspl_lightning.data.sample import build_sample_set  # noqa: E402

# A network and schedule small enough for a few seconds of CPU time.
TINY = [
    "model.n_resblocks=1",
    "model.n_feats=8",
    "data.patch_size=32",
    "data.batch_size=4",
    "data.repeat=2",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "schedule.lr_milestones=[]",
    "logger=csv",
    "callbacks.progress_bar=null",
]


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample set (x2, x3, x4), built once for the whole session."""
    root = tmp_path_factory.mktemp("sample")
    for scale in (2, 3, 4):
        build_sample_set(root, scale)
    return root


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` as the app would, with outputs under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=[f"paths.root_dir={output_dir}", *overrides],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir / "run")
    return cfg


@pytest.fixture
def train_cfg(tmp_path: Path, sample_root: Path) -> Callable[..., DictConfig]:
    """``train_cfg(*overrides, tiny=True)``: the training config on the session's sample set."""

    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        base = [*TINY] if tiny else []
        return compose_config("train", [*base, f"data.root={sample_root}", *overrides], tmp_path)

    return make


@pytest.fixture(autouse=True)
def _wandb_state_ends_with_the_test() -> Iterator[None]:
    """W&B keeps process-wide state (its service and settings): a test whose run ended in an exception left
    it such that the next test's offline run wrote no files. Each test starts from a torn-down W&B."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and hasattr(wandb, "teardown"):
        wandb.teardown()
