"""The progress bar of every run: Lightning's Rich bar titled "Epoch N", never "Epoch 0/-2"."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.demos.boring_classes import BoringModel

from pspl_lightning.callbacks import ProgressBar
from tests.conftest import compose_config


class _Titles(ProgressBar):
    """Records each title the bar shows, with the trainer's max_epochs at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int | None, str]] = []

    def _get_train_description(self, current_epoch: int) -> str:
        title = super()._get_train_description(current_epoch)
        self.seen.append((self.trainer.max_epochs, title))
        return title


def _titles(tmp_path: Path, **limits: int) -> list[tuple[int | None, str]]:
    bar = _Titles()
    trainer = L.Trainer(callbacks=[bar], logger=False, enable_checkpointing=False, limit_val_batches=0,
                        limit_train_batches=2, enable_model_summary=False, default_root_dir=tmp_path,
                        **limits)
    trainer.fit(BoringModel())
    return bar.seen


def test_a_run_bounded_by_steps_is_titled_by_its_epoch(tmp_path: Path) -> None:
    seen = _titles(tmp_path, max_steps=3)
    assert seen[0][0] == -1  # Lightning's own title would read "Epoch 0/-2"
    assert [title.rstrip() for _, title in seen][:2] == ["Epoch 0", "Epoch 1"]


def test_a_run_bounded_by_epochs_keeps_lightnings_title(tmp_path: Path) -> None:
    seen = _titles(tmp_path, max_epochs=2)
    assert [title.rstrip() for _, title in seen][:2] == ["Epoch 0/1", "Epoch 1/1"]


def test_the_default_callbacks_use_it(tmp_path: Path) -> None:
    cfg = compose_config("train", [], tmp_path)
    assert cfg.callbacks.progress_bar._target_ == "pspl_lightning.callbacks.ProgressBar"


def test_the_bar_shows_the_loss_in_4_significant_digits_and_no_logger_version(tmp_path: Path) -> None:
    bar = ProgressBar()
    trainer = L.Trainer(callbacks=[bar], logger=L.pytorch.loggers.CSVLogger(tmp_path), max_steps=1,
                        enable_checkpointing=False, limit_val_batches=0, enable_model_summary=False,
                        default_root_dir=tmp_path)
    module = BoringModel()
    trainer.fit(module)
    trainer.progress_bar_metrics["train/loss"] = 0.00012345  # PSPL's early loss: ".3f" would show 0.000
    metrics = bar.get_metrics(trainer, module)
    assert "v_num" not in metrics
    assert f"{metrics['train/loss']:{bar.theme.metrics_format}}" == "0.0001234"
