"""Bad configurations fail before any work, with a message naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pspl_lightning.cli.checks import check_train_config
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError

BAD_CONFIGS = [
    (["loss.alpha=0", "loss.beta=0"], "loss.alpha=0, loss.beta=0"),
    (["loss.alpha=-1", "loss.beta=0.5"], "loss.alpha=-1, loss.beta=0.5"),  # sigma crosses zero mid-run
    (["loss.alpha=abc"], "loss.alpha='abc' is not allowed: expected a number"),
    (["loss.max_weight=-2"], "loss.max_weight must be > 0, got -2"),
    (["loss.base=l3"], "loss.base must be one of ['charbonnier', 'l1', 'mse'], got 'l3'"),
    (["loss.step_unit=0"], "loss.step_unit must be a positive number of steps, got 0"),
    (["data.scale=5", "data.patch_size=40"], "supports model.scale 2, 3 or 4, got 5"),
    (["data.patch_size=33"], "data.patch_size=33 must be divisible by data.scale=2"),
    (["data.batch_size=0"], "data.batch_size=0 is not allowed: expected an integer >= 1"),
    (["model.scale=3"], "model.scale=3 differs from data.scale=2"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is not allowed"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is not allowed: expected a learning rate > 0"),
    (["schedule.lr_gamma=0"], "schedule.lr_gamma=0 is not allowed: expected a factor in (0, 1]"),
    (["schedule.lr_gamma=1.5"], "schedule.lr_gamma=1.5 is not allowed: expected a factor in (0, 1]"),
    (["schedule.lr_gamma=x"], "schedule.lr_gamma='x' is not allowed: expected a factor in (0, 1]"),
    (["schedule.lr_milestones=[10]"], "schedule.lr_milestones [10] are at or beyond trainer.max_steps=6"),
    (["schedule.lr_milestones=[4,2]"], "schedule.lr_milestones=[4, 2] is not allowed"),
    (["on_nonfinite=maybe"], "on_nonfinite='maybe' is not allowed: expected 'stop' or 'skip'"),
    (["data=div2k", "data.root=/nonexistent/DIV2K"], "data.root=/nonexistent/DIV2K does not exist"),
    (["experiment=edsr_baseline_x3_pspl", "data=sample", "data.patch_size=48"],
     "init_from is required by this experiment"),
    (["init_from=/nonexistent.ckpt"], "init_from=/nonexistent.ckpt: no such checkpoint"),
]


@pytest.mark.parametrize(("overrides", "fragment"), BAD_CONFIGS, ids=[" ".join(o) for o, _ in BAD_CONFIGS])
def test_bad_config_is_rejected_before_training(train_cfg, overrides: list[str], fragment: str) -> None:
    """Cross-key rules (check_train_config) or the constructor of the object that takes the value."""
    cfg = train_cfg(*overrides)
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert fragment in str(info.value)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # no training step ran


def test_each_value_has_one_check(train_cfg) -> None:
    """Single values are checked by their constructor only: check_train_config lets them through."""
    for overrides in (["loss.base=l3"], ["data.batch_size=0"], ["on_nonfinite=maybe"], ["data.scale=5",
                                                                                         "data.patch_size=40"]):
        check_train_config(train_cfg(*overrides))


def test_unknown_key_is_rejected_by_hydra(train_cfg) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="alpah"):
        train_cfg("loss.alpah=1")


def test_good_config_passes(train_cfg) -> None:
    check_train_config(train_cfg())
    check_train_config(train_cfg("loss=l1"))  # no PSPL keys to check
    check_train_config(train_cfg("schedule.lr_gamma=1"))  # (0, 1] includes 1: a constant learning rate


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
    assert not (tmp_path / "outputs").exists()  # no run folder left behind, nor the parents it made


def test_config_checks_run_before_the_heavy_imports(tmp_path) -> None:
    """A mistake the checks catch answers before torch or Lightning load (about 1 s instead of 5-7 s)."""
    env = {**os.environ, "PSPL_ROOT": str(tmp_path), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pspl_lightning.cli.train",
         "schedule.lr_milestones=[999]"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2 and "schedule.lr_milestones [999]" in proc.stderr + proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if "import time:" in line}
    assert "omegaconf" in imported and not imported & {"torch", "lightning"}


def test_a_folder_with_other_files_is_kept_on_a_config_error(tmp_path) -> None:
    """hydra.run.dir at a folder of the user's: a config mistake removes nothing there."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    env = {**os.environ, "PSPL_ROOT": str(tmp_path), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "pspl_lightning.cli.train", "loss.alpha=0", "loss.beta=0",
                           f"hydra.run.dir={mine}"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and (mine / "notes.txt").read_text() == "keep me"
