"""Bad configurations fail before any work, with a message naming the key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pspl_lightning.cli.checks import ConfigError, check_train_config
from pspl_lightning.cli.train import train


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["loss.alpha=0", "loss.beta=0"], "loss.alpha=0.0, loss.beta=0.0"),
        (["loss.alpha=-1", "loss.beta=0.5"], "loss.alpha=-1.0"),  # sigma crosses zero during the run
        (["data.scale=5"], "data.scale must be 2, 3 or 4"),
        (["data.patch_size=33"], "data.patch_size=33 must be divisible by data.scale=2"),
        (["schedule.lr_milestones=[10]"], "schedule.lr_milestones [10]"),
    ],
)
def test_bad_config_is_rejected(train_cfg, overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        check_train_config(train_cfg(*overrides))
    assert fragment in str(info.value)


def test_sigma_check_runs_before_data(train_cfg, tmp_path) -> None:
    cfg = train_cfg("loss.alpha=0", "loss.beta=0", f"data.root={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="loss.alpha"):
        train(cfg)
    assert not (tmp_path / "nowhere").exists()  # failed before building the sample set


def test_cli_stops_at_once_with_clear_message(tmp_path) -> None:
    env = {**os.environ, "PSPL_ROOT": str(tmp_path), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "pspl_lightning.cli.train", "loss.alpha=0", "loss.beta=0"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "loss.alpha" in out and "loss.beta" in out and "Traceback" not in out
    assert not (tmp_path / "data").exists()
