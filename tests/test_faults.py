"""Never lose a run: exact resume, SIGTERM, NaN guard, atomic checkpoints, logs kept, unique folders."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pspl_lightning.callbacks.guards import TrainingDiverged, first_nonfinite
from pspl_lightning.checkpointing import AtomicCheckpointIO
from pspl_lightning.cli.run_folder import latest_run, run_checkpoint
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError
from pspl_lightning.loggers import CSVLogger
from tests.conftest import TINY, compose_config
from tests.helpers.fault_probes import tensor_dicts_equal

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _cfg(root: Path, sample_root: Path, *overrides: str):
    return compose_config("train", [*TINY, f"data.root={sample_root}", *overrides], root)


def _column(run: Path, key: str) -> list[float]:
    with open(run / "csv" / "metrics.csv") as fh:
        return [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]


def _net_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {k: v for k, v in state["state_dict"].items() if k.startswith("net.")}


@pytest.mark.parametrize(("accumulate", "repeat", "batch", "workers"),
                         [(1, 1, 4, 0), (2, 2, 4, 0), (1, 2, 6, 2)])
def test_resume_reproduces_the_uninterrupted_run(sample_root: Path, tmp_path: Path, accumulate: int,
                                                 repeat: int, batch: int, workers: int) -> None:
    """Epochs of 1 step (stopped at an epoch's end), and of 2 steps with 2 workers (stopped in epoch 1's
    middle: a DataLoader with workers samples as soon as its iterator is made, which Lightning does on
    resume before it sets the epoch, so the loader starts at its first batch instead)."""
    common = ["schedule.lr_milestones=[6]", "loss.step_unit=4", f"data.num_workers={workers}",
              f"data.batch_size={batch}", "optimizer.lr=1e-3", f"data.repeat={repeat}", "trainer.max_steps=8",
              f"trainer.accumulate_grad_batches={accumulate}", f"trainer.val_check_interval={4 * accumulate}"]
    straight = _cfg(tmp_path / "a", sample_root, *common)
    train(straight)
    first = _cfg(tmp_path / "b", sample_root, *common, "+callbacks.stop._target_=tests.helpers.probes.StopAt",
                 "+callbacks.stop.step=3")
    assert train(first)["global_step"] == 3  # interrupted between validations
    run_b = Path(first.paths.output_dir)
    resumed = _cfg(tmp_path / "c", sample_root, *common, f"resume={run_b}")
    metrics = train(resumed)

    assert metrics["global_step"] == 8
    assert Path(resumed.paths.output_dir) == run_b  # continued in its own folder
    run_a = Path(straight.paths.output_dir)
    assert _column(run_b, "pspl/sigma") == pytest.approx(_column(run_a, "pspl/sigma"))  # appended, same pace
    assert len(_column(run_b, "pspl/sigma")) == 8
    a = _net_weights(run_a / "checkpoints" / "last.ckpt")
    b = _net_weights(run_b / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)  # bit for bit
    assert json.loads((run_b / "metrics.json").read_text())["val/psnr_y"] == pytest.approx(
        json.loads((run_a / "metrics.json").read_text())["val/psnr_y"], abs=1e-6)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(sample_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, sample_root, "loss=l1", "loss._target_=tests.helpers.probes.NaNOnCall",
               "+loss.bad_call=3", "schedule.checkpoint_every_n_steps=1", "trainer.max_steps=6")
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(TrainingDiverged, match=rf"^non-finite training loss nan at step 3; stopped, the last "
                                               rf"good checkpoint is kept: {re.escape(str(ckpt.parent))}"
                                               rf"/\S+\.ckpt \(on_nonf") as exc:
        train(cfg)
    assert Path(str(exc.value).split("kept: ")[1].split(" (")[0]).is_file()  # the newest of the run's
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in _net_weights(ckpt).values())


def test_first_nonfinite_finds_every_nan_and_inf_and_nothing_else() -> None:
    torch.manual_seed(0)
    weights = {"a": torch.randn(3, 4), "b": torch.randn(7, dtype=torch.float64),
               "c": torch.randn(2, 2).half(), "steps": torch.tensor([5]), "empty": torch.empty(0)}
    assert first_nonfinite(weights.items()) is None
    for name in ("a", "b", "c"):
        for bad in (float("nan"), float("inf"), float("-inf")):
            for pos in (0, weights[name].numel() - 1):
                broken = {k: v.clone() for k, v in weights.items()}
                broken[name].view(-1)[pos] = bad
                found = first_nonfinite(broken.items())
                assert found is not None and found[0] == name
                assert found[1] == bad or (math.isnan(bad) and math.isnan(found[1]))
    huge = {"f32": torch.full((3,), 3.4e38), "f64": torch.tensor([1e300, -1e300], dtype=torch.float64)}
    assert first_nonfinite(huge.items()) is None  # finite, however large: no overflow in the check


def _checkpoints(run: Path) -> dict[str, tuple[int, bool]]:
    """Every checkpoint file of a run: its global step and whether all its weights are finite."""
    found = {}
    for path in sorted((run / "checkpoints").glob("*.ckpt")):
        state = torch.load(path, map_location="cpu", weights_only=True)
        finite = all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
        found[path.name] = (state["global_step"], finite)
    return found


NAN_AT_4 = ["+callbacks.nan._target_=tests.helpers.fault_probes.NaNWeightAt", "+callbacks.nan.step=4",
            "schedule.checkpoint_every_n_steps=2", "trainer.val_check_interval=100"]


@pytest.mark.parametrize(("save", "overrides", "kept"), [
    # last.ckpt every 2 steps, the weight guard every 100: before, the save at step 4 had no check at all
    ("every_n_steps", NAN_AT_4, {"last.ckpt": (2, True)}),
    # the checkpoint and the guard on the same step: before, the checkpoint callback ran first
    ("with_the_guard", [*NAN_AT_4, "callbacks.nonfinite_guard.every_n_steps=2"], {"last.ckpt": (2, True)}),
    # SIGTERM during the NaN step (no periodic save at 4): the save on the way out must not replace last.ckpt
    ("sigterm", [*NAN_AT_4, "schedule.checkpoint_every_n_steps=3",
                 "+callbacks.term._target_=tests.helpers.fault_probes.SigtermAt", "+callbacks.term.step=4"],
     {"last.ckpt": (3, True)}),
    # Lightning's ModelCheckpoint at the validation of step 4 (its first: it would save whatever the score)
    ("model_checkpoint", [*NAN_AT_4, "callbacks.last_checkpoint=null", "trainer.val_check_interval=4"], {}),
    ("weights_only", [*NAN_AT_4, "callbacks.last_checkpoint=null", "trainer.val_check_interval=4",
                      "+callbacks.model_checkpoint.save_weights_only=true"], {}),
])
def test_no_checkpoint_with_nonfinite_weights_is_ever_written(sample_root: Path, tmp_path: Path, save: str,
                                                              overrides: list[str], kept: dict) -> None:
    cfg = _cfg(tmp_path, sample_root, *overrides)
    handler = signal.getsignal(signal.SIGTERM)
    kept_line = r"the last good checkpoint is kept: \S+last\.ckpt" if kept else "no checkpoint was written"
    with pytest.raises(TrainingDiverged, match=r"non-finite weight net\.\S+ = nan at step 4; checkpoint not "
                                               r"written, " + kept_line):
        train(cfg)
    assert _checkpoints(Path(cfg.paths.output_dir)) == kept
    assert signal.getsignal(signal.SIGTERM) == handler  # Lightning's shutdown ran (it restores the handler)


def test_weight_guard_stops_between_checkpoints(sample_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, sample_root, "+callbacks.nan._target_=tests.helpers.fault_probes.NaNWeightAt",
               "+callbacks.nan.step=3", "callbacks.nonfinite_guard.every_n_steps=3",
               "schedule.checkpoint_every_n_steps=2", "trainer.val_check_interval=100")
    with pytest.raises(TrainingDiverged, match=r"non-finite weight net\.\S+ = nan at step 3; stopped"):
        train(cfg)  # step 4 would have NaN loss: the guard, not the loss check, stopped the run
    assert _checkpoints(Path(cfg.paths.output_dir)) == {"last.ckpt": (2, True)}


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PSPL_ROOT": str(root), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_skipped_batch_counts_as_a_step_but_changes_no_weight(sample_root: Path, tmp_path: Path) -> None:
    """on_nonfinite=skip: the batch's update is dropped (weights and Adam's moments and step count untouched),
    but Lightning counts it as an optimizer step: the global step, hence sigma and the LR schedule, advance,
    and it counts towards max_steps."""
    rows = tmp_path / "rows.pt"
    cfg = _cfg(tmp_path, sample_root, "loss=l1", "loss._target_=tests.helpers.probes.NaNOnCall",
               "+loss.bad_call=2", "on_nonfinite=skip", "trainer.max_steps=4", "schedule.lr_milestones=[3]",
               "+callbacks.rec._target_=tests.helpers.fault_probes.StateRecorder",
               f"+callbacks.rec.path={rows}")
    assert train(cfg)["global_step"] == 4
    states = torch.load(rows, weights_only=True)
    assert [r["global_step"] for r in states] == [1, 2, 3, 4]  # 4 batches, the third one skipped
    assert [r["scheduler_steps"] for r in states] == [1, 2, 3, 4]
    assert [r["lr"] for r in states] == pytest.approx([5e-4, 5e-4, 2.5e-4, 2.5e-4])
    before, skipped, after = states[1], states[2], states[3]
    assert tensor_dicts_equal(skipped["weights"], before["weights"])  # bit for bit
    assert len(skipped["adam"]) == len(before["adam"]) > 0
    for old, new in zip(before["adam"], skipped["adam"], strict=True):
        assert tensor_dicts_equal(new, old)  # exp_avg, exp_avg_sq and Adam's own step count
    assert all(float(s["step"]) == 2 for s in skipped["adam"])
    assert not tensor_dicts_equal(after["weights"], skipped["weights"])  # the next batch trains again
    assert all(float(s["step"]) == 3 for s in after["adam"])


def test_the_skip_message_names_the_rank_whose_loss_was_non_finite(caplog: pytest.LogCaptureFixture) -> None:
    """Under DDP every rank skips or stops together: a rank whose own loss was finite says so."""
    from types import SimpleNamespace

    from pspl_lightning.module import SRModule

    skip = SimpleNamespace(on_nonfinite="skip", global_step=7)
    with caplog.at_level(logging.WARNING, logger="pspl_lightning"):
        SRModule._non_finite(skip, None)
        SRModule._non_finite(skip, torch.tensor(float("inf")))
    assert [r.getMessage() for r in caplog.records] == [
        "non-finite training loss on another rank at step 7: batch skipped (on_nonfinite=skip)",
        "non-finite training loss inf at step 7: batch skipped (on_nonfinite=skip)"]
    with pytest.raises(TrainingDiverged, match=r"^non-finite training loss on another rank at step 7; stop"):
        SRModule._non_finite(SimpleNamespace(on_nonfinite="stop", global_step=7, _trainer=None), None)


def _wait_for(path: Path, lines: int, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= lines:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach {lines} lines")


def test_sigterm_saves_a_checkpoint_and_resume_finishes(sample_root: Path, tmp_path: Path) -> None:
    env, probe, log = _env(tmp_path), tmp_path / "probe", tmp_path / "train.out"
    args = [sys.executable, "-m", "pspl_lightning.cli.train", *TINY, f"data.root={sample_root}",
            "trainer.max_steps=1000", "trainer.val_check_interval=1000",
            "schedule.checkpoint_every_n_steps=1000",
            "+callbacks.probe._target_=tests.helpers.probes.RankProbe", f"+callbacks.probe.out_dir={probe}"]
    with open(log, "w") as out:  # a file, not a pipe: a child that prints a lot never blocks
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        _wait_for(probe / "rank0.jsonl", 3, proc, log)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    printed = log.read_text()
    assert proc.returncode == 143, printed[-3000:]
    assert "Stopped by SIGTERM" in printed and "Traceback" not in printed
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    stopped_at = ckpt["global_step"]
    assert 3 <= stopped_at < 1000

    resume = subprocess.run(
        [*args, "resume=true", f"trainer.max_steps={stopped_at + 2}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stdout[-2000:] + resume.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == stopped_at + 2
    (fresh,) = (p for p in run.parent.iterdir() if p != run)  # the resuming command's own Hydra folder
    assert (fresh / "resumed_into.txt").read_text().strip() == str(run)
    assert "Resuming" in (run / "train.log").read_text()  # the run's log goes on in its folder

    straight = _cfg(tmp_path / "straight", sample_root, f"trainer.max_steps={stopped_at + 2}")
    train(straight)  # the same run without the interruption
    uninterrupted = _net_weights(Path(straight.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert tensor_dicts_equal(_net_weights(run / "checkpoints" / "last.ckpt"), uninterrupted)


def test_sigterm_in_an_epochs_last_batch_resumes_exactly(sample_root: Path, tmp_path: Path) -> None:
    """The signal seen in an epoch's last batch stops the run after the epoch has ended; resumed from that
    checkpoint, the next epoch must be run, not skipped (it was, and the resumed run saw other patches)."""
    common = ["trainer.val_check_interval=1000", "schedule.checkpoint_every_n_steps=1000"]
    stopped = _cfg(tmp_path / "a", sample_root, *common, "trainer.max_steps=1000",
                   "+callbacks.term._target_=tests.helpers.fault_probes.SigtermAt", "+callbacks.term.step=3")
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException
        train(stopped)
    run = Path(stopped.paths.output_dir)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (ckpt["global_step"], ckpt["epoch"]) == (3, 1)  # epoch 0 (3 steps) ended, 1 not begun
    train(_cfg(tmp_path / "b", sample_root, *common, "trainer.max_steps=5", f"resume={run}"))
    straight = _cfg(tmp_path / "c", sample_root, *common, "trainer.max_steps=5")
    train(straight)
    uninterrupted = _net_weights(Path(straight.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert tensor_dicts_equal(_net_weights(run / "checkpoints" / "last.ckpt"), uninterrupted)
    assert _column(run, "pspl/sigma") == pytest.approx(_column(Path(straight.paths.output_dir), "pspl/sigma"))


def test_atomic_checkpoint_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - any pickling failure
        io.save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_csv_logger_appends_on_resume(tmp_path: Path) -> None:
    for step in (0, 1):
        logger = CSVLogger(tmp_path, name="", version="csv")
        logger.log_metrics({"train/loss": float(step)}, step=step)
        logger.save()
    assert _column(tmp_path, "train/loss") == [0.0, 1.0]


def test_run_folders_are_unique_and_resume_picks_the_latest(tmp_path: Path, sample_root: Path) -> None:
    dirs = {OmegaConf.select(_cfg(tmp_path, sample_root), "hydra.run.dir") for _ in range(3)}
    assert len(dirs) == 3  # composed within the same second, still three folders
    runs = tmp_path / "runs"
    for name in ("old", "new", "empty"):
        (runs / name / "checkpoints").mkdir(parents=True)
    for i, name in enumerate(("old", "new")):  # explicit times: no reliance on the file system's resolution
        (runs / name / "checkpoints" / "last.ckpt").write_bytes(b"0")
        os.utime(runs / name / "checkpoints" / "last.ckpt", (1e9 + i, 1e9 + i))
    assert latest_run(runs) == (runs / "new", runs / "new" / "checkpoints" / "last.ckpt")
    assert latest_run(runs, exclude=runs / "new")[0] == runs / "old"
    assert run_checkpoint(runs / "empty") is None
    with pytest.raises(ConfigError, match="no run folder"):
        latest_run(tmp_path / "nothing")
    for i, name in enumerate(("hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt")):  # SLURM's, in the run folder itself
        (runs / "old" / name).write_bytes(b"0")
        os.utime(runs / "old" / name, (1e9 + i * 2, 1e9 + i * 2))  # 1e9 and 1e9 + 2 around last.ckpt's
    assert run_checkpoint(runs / "old") == runs / "old" / "hpc_ckpt_2.ckpt"  # the newest of a folder's
    os.utime(runs / "old" / "hpc_ckpt_2.ckpt", (1e9 - 1, 1e9 - 1))
    assert run_checkpoint(runs / "old") == runs / "old" / "checkpoints" / "last.ckpt"


def test_slurm_jobs_keep_one_folder_across_ranks_and_requeues(monkeypatch: pytest.MonkeyPatch) -> None:
    from pspl_lightning.cli.hydra_setup import run_id

    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert run_id() == run_id() == "slurm-4242-0"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert run_id() != run_id()  # outside SLURM: time + random suffix


def test_a_reused_folder_continues_only_its_own_run(sample_root: Path, tmp_path: Path) -> None:
    from pspl_lightning.cli.run_folder import resolve_resume

    train(_cfg(tmp_path, sample_root, "trainer.max_steps=2"))
    same = _cfg(tmp_path, sample_root, "trainer.max_steps=4")  # same folder, same run, longer: continues
    assert resolve_resume(same) == str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    other = _cfg(tmp_path, sample_root, "loss=l1")
    with pytest.raises(ConfigError, match=r"holds a checkpoint of another run \(loss was"):
        resolve_resume(other)
