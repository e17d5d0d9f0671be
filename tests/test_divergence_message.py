"""What a diverged run says: the checkpoint it keeps when it has one, else that none was written; and an
infinite learning rate refused before any work, as NaN is."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest

from pspl_lightning.callbacks.guards import LastCheckpoint, _diverged
from pspl_lightning.cli.checks import check_train_config
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError, TrainingDiverged
from tests.conftest import TINY, compose_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("lr", ["inf", "-inf", "nan"])
def test_a_learning_rate_that_is_not_finite_is_refused(train_cfg, lr: str) -> None:
    cfg = train_cfg(f"optimizer.lr={lr}")
    with pytest.raises(ConfigError, match=re.escape(f"optimizer.lr={float(lr)!r} is not allowed: expected a "
                                                    f"learning rate > 0")):
        check_train_config(cfg)


def test_the_divergence_message_names_the_kept_checkpoint_only_when_there_is_one(tmp_path: Path) -> None:
    last = LastCheckpoint(tmp_path / "checkpoints")
    trainer = L.Trainer(callbacks=[last], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    message = str(_diverged("net.w", float("nan"), 3, "stopped", trainer))
    assert message.startswith("non-finite weight net.w = nan at step 3; stopped, no checkpoint was written "
                              "yet (lower optimizer.lr")
    assert "checkpoints/ folder" not in message
    last.path.parent.mkdir()
    last.path.write_bytes(b"0")
    message = str(_diverged("net.w", float("nan"), 3, "stopped", trainer))
    assert f"stopped, the last good checkpoint is kept: {last.path} (lower optimizer.lr" in message


def test_a_run_that_diverges_before_its_first_checkpoint_says_none_was_written(sample_root: Path,
                                                                                tmp_path: Path) -> None:
    """NaN weights from step 1 on, a save every step: the first save is refused; nothing was kept."""
    cfg = compose_config("train", [*TINY, f"data.root={sample_root}", "schedule.checkpoint_every_n_steps=1",
                                   "+callbacks.nan._target_=tests.helpers.fault_probes.NaNWeightAt",
                                   "+callbacks.nan.step=1", "trainer.val_check_interval=100"], tmp_path)
    with pytest.raises(TrainingDiverged, match=r"at step 1; checkpoint not written, no checkpoint was "
                                               r"written yet \(lower optimizer.lr"):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))


def test_a_nan_loss_before_the_first_checkpoint_says_none_was_written(sample_root: Path,
                                                                      tmp_path: Path) -> None:
    """The loss's message says what the weight's says (it used to point at a checkpoints/ folder that did
    not exist yet)."""
    cfg = compose_config("train", [*TINY, f"data.root={sample_root}", "loss=l1",
                                   "loss._target_=tests.helpers.probes.NaNOnCall", "+loss.bad_call=1",
                                   "trainer.val_check_interval=100"], tmp_path)
    with pytest.raises(TrainingDiverged, match=r"^non-finite training loss nan at step \d+; stopped, no "
                                               r"checkpoint was written yet \(on_nonfinite=skip skips such "
                                               r"batches instead\)$"):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))
