"""A resume is the same run: the recorded config is taken, the command line may change only what cannot
change the result, anything else is refused in one line; a finished run is left as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from pspl_lightning.cli.resume_rules import (
    defaults_config,
    override_keys,
    take_recorded_config,
    world_size_rule,
)
from pspl_lightning.cli.run_folder import resolved_config
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError
from tests.conftest import TINY, compose_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
# TINY without its EDSR keys, so that model=tiny composes; 2 steps, no validation before the last
SMALL = [o for o in TINY if not o.startswith(("model.", "trainer.max_steps", "trainer.val_check"))] + [
    "trainer.val_check_interval=100"]


def _take(recorded: DictConfig, current: DictConfig) -> None:
    """What a resume does with ``current`` (this command's config) given the run's ``recorded`` one."""
    overrides = list(current.hydra.overrides.task)
    take_recorded_config(current, resolved_config(recorded), override_keys(overrides),
                         defaults_config("train"), "resume=<run>")


def test_the_recorded_config_is_taken_and_free_keys_come_from_the_command_line(train_cfg) -> None:
    recorded = train_cfg("loss=l1", "trainer=ddp_cpu", "callbacks=ema", "callbacks.ema.decay=0.5", "seed=7")
    current = train_cfg("trainer.max_steps=14", "logger=tensorboard", "data.num_workers=2",
                        "callbacks.progress_bar=null", "data.root=/scratch/sample",
                        "trainer.val_check_interval=7")
    _take(recorded, current)
    assert current.loss == {"_target_": "torch.nn.L1Loss"} and current.module.loss == current.loss
    assert current.seed == 7 and current.data.seed == 7
    trainer = current.trainer
    assert (trainer.devices, trainer.strategy, trainer.accelerator) == (2, "ddp", "cpu")
    assert current.callbacks.ema.decay == 0.5  # weight averaging changes the result: the run's own
    assert current.trainer.max_steps == 14 and current.data.num_workers == 2  # this command's
    assert current.data.root == "/scratch/sample"  # the same images, elsewhere
    assert current.trainer.val_check_interval == 7  # validation does not train
    assert "tensorboard" in current.logger and current.callbacks.progress_bar is None


def test_a_changed_key_is_refused_naming_both_values(train_cfg) -> None:
    recorded = train_cfg("loss=l1", "callbacks=ema", "callbacks.ema.decay=0.5")
    with pytest.raises(ConfigError) as caught:
        _take(recorded, train_cfg("loss.max_weight=3", "seed=7", "model.n_feats=16"))
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith("resume=<run> continues the run as it was recorded; this command line changes "
                           "it: ")
    assert "loss was L1Loss(), now PSPLLoss(alpha=1.0, beta=0.0, max_weight=3, step_unit=10, " in line
    assert "model.n_feats was 8, now 16" in line and "seed was 42, now 7" in line
    assert "module" not in line  # the module node repeats model and loss: not named twice
    with pytest.raises(ConfigError, match=r"callbacks\.ema\.decay was 0\.5, now 0\.9"):
        _take(recorded, train_cfg("callbacks=ema", "callbacks.ema.decay=0.9"))


def test_devices_may_change_only_where_the_world_size_stays() -> None:
    assert world_size_rule({"devices": 2, "num_nodes": 1}, {"devices": [0, 1], "num_nodes": 1}) is None
    assert world_size_rule({"devices": 4, "num_nodes": 2}, {"devices": 8, "num_nodes": 1}) is None
    assert world_size_rule({"devices": "auto"}, {"devices": "auto"}) is None
    refusal = world_size_rule({"devices": 8, "num_nodes": 2}, {"devices": 4, "num_nodes": 2})
    assert refusal == ("the run trained on trainer.devices=8 x trainer.num_nodes=2 processes and this "
                       "command asks for trainer.devices=4 x trainer.num_nodes=2: a resume on another "
                       "number of processes is not supported yet; keep the run's devices and nodes")
    assert world_size_rule({"devices": "auto"}, {"devices": 2}) is not None  # cannot tell: refused


def test_world_keys_follow_the_rule(train_cfg) -> None:
    recorded = train_cfg("trainer=ddp_cpu")
    same_world = train_cfg("trainer=ddp_cpu", "trainer.strategy=ddp_spawn")
    _take(recorded, same_world)
    assert (same_world.trainer.devices, same_world.trainer.strategy) == (2, "ddp_spawn")
    with pytest.raises(ConfigError, match=r"trainer\.devices=2 x trainer\.num_nodes=1 processes and this "
                                          r"command asks for trainer\.devices=1 x trainer\.num_nodes=1"):
        _take(recorded, train_cfg("trainer=ddp_cpu", "trainer.devices=1"))


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PSPL_ROOT": str(root), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": str(ROOT)}


def _cli(args: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pspl_lightning.cli.train", *args], cwd=root, env=_env(root),
                          capture_output=True, text=True, timeout=300)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_resume_continues_the_recorded_run_and_refuses_or_leaves_a_finished_one(sample_root: Path,
                                                                                  tmp_path: Path) -> None:
    """An L1 run of model=tiny, 2 steps. In its folder (hydra.run.dir=X): ``resume=true`` with nothing left
    to train says so (exit 0) and a changed loss or network is refused (exit 2), both leaving every file of
    X as it was, .hydra/*.yaml included; ``resume=true trainer.max_steps=4`` without repeating loss=l1 or
    model=tiny continues the L1 tiny run; ``ckpt_path=`` follows the same rules."""
    first = compose_config("train", [*SMALL, f"data.root={sample_root}", "model=tiny", "loss=l1",
                                     "trainer.max_steps=2"], tmp_path / "a")
    train(first)
    run = Path(first.paths.output_dir)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("the run's own record\n")
    (run / "train.log").write_text("the run's own log\n")  # as the Hydra app writes it
    before = _snapshot(run)
    common = [*SMALL, f"data.root={sample_root}", f"hydra.run.dir={run}", "resume=true"]

    done = _cli([*common, "trainer.max_steps=2"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"Nothing left to train: {run}/checkpoints/last.ckpt is at step 2 and trainer.max_steps=2; the run "
        f"is unchanged (raise trainer.max_steps to train on)")
    assert _snapshot(run) == before  # not one byte or time stamp changed, train.log included
    refused = _cli([*common, "trainer.max_steps=4", "loss=pspl", "model=tiny", "model.n_layers=3"], tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = [ln for ln in refused.stderr.splitlines() if ln.startswith("Invalid configuration")]
    assert "loss was L1Loss(), now PSPLLoss(" in line and "model.n_layers was 2, now 3" in line
    after = _snapshot(run)
    log_lines = after.pop("train.log")[0].decode().splitlines()
    assert log_lines[0] == "the run's own log" and len(log_lines) == 2 and log_lines[1].endswith(line)
    assert {k: v for k, v in before.items() if k != "train.log"} == after  # the log has the refusal only
    assert not (tmp_path / "outputs").exists()

    assert train(compose_config("train", [*SMALL, f"data.root={sample_root}", "resume=true",  # in X again
                                          "trainer.max_steps=4"], tmp_path / "a"))["global_step"] == 4
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert ckpt["hyper_parameters"]["loss"] == {"_target_": "torch.nn.L1Loss"}
    assert ckpt["hyper_parameters"]["net"]["_target_"] == "pspl_lightning.archs.TinySR"
    assert "pspl/sigma" not in (run / "csv" / "metrics.csv").read_text()  # no PSPL step was written
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 4

    finished = _snapshot(run)  # resume=<run> at its end: its metrics, nothing written
    own = tmp_path / "e" / "run"
    own.mkdir(parents=True)
    (own / "train.log").write_text("")  # this command's own folder, as Hydra makes it: removed again
    again = compose_config("train", [*SMALL, f"data.root={sample_root}", f"resume={run}",
                                     "trainer.max_steps=4"], tmp_path / "e")
    assert train(again)["global_step"] == 4
    assert _snapshot(run) == finished and not own.exists()

    ckpt_path = str(run / "checkpoints" / "last.ckpt")  # the same rules (taking them: the unit tests above)
    with pytest.raises(ConfigError, match=r"^ckpt_path=.* changes it: data\.seed was 42, now 7; seed was 42, "
                                          r"now 7\. Leave these keys out"):
        train(compose_config("train", [*SMALL, f"data.root={sample_root}", f"ckpt_path={ckpt_path}",
                                       "trainer.max_steps=5", "seed=7"], tmp_path / "c"))
