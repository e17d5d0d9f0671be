"""A run stopped and resumed logs every metric at the step the uninterrupted run logs it at."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pspl_lightning.cli.train import train
from tests.conftest import TINY, compose_config

COMMON = ["trainer.log_every_n_steps=1", "logger=[csv,tensorboard]"]
ROOT = Path(__file__).resolve().parents[1]


def _logged(run: Path) -> dict[str, list[int]]:
    """metric -> the steps at which csv/metrics.csv holds a value of it; the TensorBoard event files of the
    run (all of them: a resumed run adds a file) must hold every metric at the same steps."""
    steps: dict[str, list[int]] = defaultdict(list)
    with open(run / "csv" / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):  # epoch: Lightning's bookkeeping
                    steps[key].append(int(row["step"]))
    board: dict[str, list[int]] = defaultdict(list)
    for events in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            board[tag] += [e.step for e in acc.Scalars(tag)]
    board.pop("epoch", None)
    assert {k: sorted(v) for k, v in board.items()} == {k: sorted(v) for k, v in steps.items()}
    return dict(steps)


AT_A_VALIDATION = ["trainer.max_steps=6"]
BETWEEN_VALIDATIONS = ["+callbacks.stop._target_=tests.helpers.probes.StopAt", "+callbacks.stop.step=4"]


def _check_resumes(sample_root: Path, tmp_path: Path, interval: int, stops: dict[int, list[str]]) -> None:
    """One uninterrupted 9-step run against runs stopped at each step of ``stops`` and resumed to 9."""
    def cfg(name: str, *overrides: str):
        return compose_config("train", [*TINY, f"data.root={sample_root}", *COMMON, "trainer.max_steps=9",
                                        f"trainer.val_check_interval={interval}", *overrides],
                              tmp_path / name)

    straight = cfg("straight")
    train(straight)
    expected = _logged(Path(straight.paths.output_dir))
    assert expected["val/psnr_y"] == ([2, 5, 8] if interval == 3 else [8])  # after steps 3, 6, 9 / 9
    assert expected["train/loss"] == list(range(9))
    for stopped_at, stop in stops.items():
        first = cfg(f"stop{stopped_at}", *stop)
        train(first)
        run = Path(first.paths.output_dir)
        train(cfg(f"resume{stopped_at}", f"resume={run}"))
        got = _logged(run)
        for key, steps in expected.items():
            # the interrupted run validated once more where it stopped (logged by Lightning at that step - 1)
            seen = [s for s in got[key] if not (key.startswith("val/") and s == stopped_at - 1
                                                and stopped_at - 1 not in steps)]
            assert seen == steps, (stopped_at, key)


def test_resumed_runs_log_at_the_uninterrupted_steps(sample_root: Path, tmp_path: Path) -> None:
    """Stopped at a validation (step 6) and between validations (step 4), then resumed."""
    _check_resumes(sample_root, tmp_path, 3, {6: AT_A_VALIDATION, 4: BETWEEN_VALIDATIONS})


@pytest.mark.slow
def test_resumed_run_logs_at_the_uninterrupted_steps_with_final_validations_only(sample_root: Path,
                                                                                 tmp_path: Path) -> None:
    """The issue's report: 6 steps, then resumed to 9, validating only at the end of each part."""
    _check_resumes(sample_root, tmp_path, 100, {6: AT_A_VALIDATION})


def _rows(run: Path) -> list[dict[str, str]]:
    """csv/metrics.csv without wall-clock columns, in order."""
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if v and "time" not in k} for row in csv.DictReader(fh)]


def _board(run: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's scalars as TensorBoard shows them: every event file of the run read in order, so that
    a resumed run's purge applies."""
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = [tag for tag in acc.Tags()["scalars"] if tag != "epoch"]
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags}


@pytest.mark.parametrize("killed_at", [7, 8])
def test_history_after_a_kill_and_resume_equals_the_uninterrupted_run(sample_root: Path, tmp_path: Path,
                                                                      killed_at: int) -> None:
    """SIGKILL (no handler, no save) before the batch that makes step ``killed_at + 1``: at 7 the last
    checkpoint is the one after step 5's validation and the killed run had logged steps 5 and 6 (CSV then
    held them twice after the resume); at 8 it is the periodic save of step 8, after which Lightning logs
    step 7's metrics (a row a resumed run never writes again). CSV and TensorBoard histories of the resumed
    run equal the uninterrupted run's, with Lightning's default flushing (rows still buffered are lost)."""
    overrides = [*TINY, f"data.root={sample_root}", "logger=[csv,tensorboard]", "trainer.log_every_n_steps=1",
                 "trainer.max_steps=12", "trainer.val_check_interval=5",
                 "schedule.checkpoint_every_n_steps=4",
                 "+callbacks.kill._target_=tests.helpers.fault_probes.KillAt"]
    straight = compose_config("train", [*overrides, "+callbacks.kill.step=999"], tmp_path / "straight")
    train(straight)
    folder = tmp_path / "killed"
    env = {**os.environ, "PSPL_ROOT": str(tmp_path), "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-m", "pspl_lightning.cli.train", *overrides,
                             f"+callbacks.kill.step={killed_at}", f"hydra.run.dir={folder}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    train(compose_config("train", [*overrides, f"+callbacks.kill.step={killed_at}", f"resume={folder}"],
                         tmp_path / "resumed"))
    reference = Path(straight.paths.output_dir)
    assert _rows(folder) == _rows(reference)
    assert _board(folder) == _board(reference)


def _killed_runs_events(folder: Path, stamp: int) -> None:
    """An event file in ``folder`` dated ``stamp`` holding ``x`` at step 7, as a run killed after a
    checkpoint at step 5 leaves it."""
    from torch.utils.tensorboard import SummaryWriter

    elsewhere = folder.parent / "elsewhere"
    with SummaryWriter(log_dir=str(elsewhere)) as writer:
        writer.add_scalar("x", 7.0, 7)
    (made,) = elsewhere.glob("events.out.tfevents.*")
    folder.mkdir(parents=True, exist_ok=True)
    made.rename(folder / f"events.out.tfevents.{stamp:010d}.zz-killed-host.99999.0")


def test_a_resumed_runs_events_are_read_after_the_killed_runs(tmp_path: Path) -> None:
    """TensorBoard reads a folder's event files in name order, and a name starts with the second the file
    was made: a run resumed within the second the killed run's file was made had its file read first, so
    its purge (``rewind``) did not drop the killed run's steps (a CI failure: steps 0-6 shown after 11).
    The new file waits for the next second; TensorBoard shows the resumed run's step 5 alone."""
    from pspl_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    _killed_runs_events(Path(logger.log_dir), int(time.time()) + 1)
    logger.rewind(5)
    logger.log_metrics({"x": 5.0}, step=5)
    logger.finalize("success")
    names = sorted(p.name for p in Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert "zz-killed-host" in names[0], names
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("x")] == [(5, 5.0)]


def test_events_dated_far_ahead_of_the_clock_are_reported_not_waited_for(tmp_path: Path, caplog) -> None:
    """A folder whose files are dated minutes ahead (another node's clock) is not waited out: one warning."""
    from pspl_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    _killed_runs_events(Path(logger.log_dir), int(time.time()) + 300)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="pspl_lightning"):
        logger.experiment.flush()
    assert time.monotonic() - started < 2
    assert [r.getMessage() for r in caplog.records if "ahead of this machine's clock" in r.getMessage()]


class _SentRows:
    """Stands in for a W&B run: records what it was sent."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log(self, row: dict) -> None:
        self.rows.append(row)


def _wandb_logger(save_dir: Path, sent: _SentRows):
    from pspl_lightning.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(save_dir), offline=True, project="p")
    logger._experiment = sent
    return logger


def test_a_resumed_wandb_run_skips_the_steps_it_already_holds(tmp_path: Path) -> None:
    """W&B keeps every row it was sent: a run killed at step 9 after its checkpoint at step 5 had sent
    steps 5-9, which the resumed run sends again. Resumed, the logger skips what W&B holds (the train row
    of step 9 too, but not step 9's validation, which the killed run never sent): W&B's history is the
    uninterrupted run's."""
    def rows(last: int) -> list[tuple[int, dict]]:
        out = [(s, {"train/loss": float(s)}) for s in range(last + 1)]
        return out + [(s, {"val/psnr_y": 30.0 + s}) for s in (4, 9) if s <= last]

    straight = _SentRows()
    reference = _wandb_logger(tmp_path / "straight", straight)
    for step, metrics in sorted(rows(11), key=lambda r: r[0]):
        reference.log_metrics(metrics, step)
    sent = _SentRows()
    killed = _wandb_logger(tmp_path / "run", sent)
    for step, metrics in sorted(rows(9), key=lambda r: r[0]):
        if (step, metrics) != (9, {"val/psnr_y": 39.0}):  # killed before step 9's validation was sent
            killed.log_metrics(metrics, step)
    resumed = _wandb_logger(tmp_path / "run", sent)
    resumed.rewind(5)
    for step, metrics in sorted(rows(11), key=lambda r: r[0]):
        if step >= 5:
            resumed.log_metrics(metrics, step)
    assert sent.rows == straight.rows
