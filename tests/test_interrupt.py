"""Ctrl-C, as a terminal sends it (SIGINT to every process of the job): during training the first one saves
at the next step boundary and stops with one line (exit 130, resumable), a second one stops at once; before
and after training it stops at once. Never a traceback, at any moment; data-loader workers keep serving
until the run stops them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pspl_lightning.cli import entry
from pspl_lightning.cli.failures import one_line_failures
from pspl_lightning.launch import stop_requests
from tests.helpers.fault_probes import tensor_dicts_equal

ROOT = Path(__file__).resolve().parents[1]
PSPL_TRAIN = str(Path(sys.executable).parent / "pspl-train")  # the console script, as a user runs it
STEPS = 16
RUN = ["model=tiny", "logger=csv", f"trainer.max_steps={STEPS}", "data.batch_size=4", "data.num_workers=2",
       "schedule.checkpoint_every_n_steps=4", "schedule.val_every_n_steps=5", "schedule.lr_milestones=[]",
       "callbacks.progress_bar=null", "trainer.enable_model_summary=false",
       "+callbacks.signal_at._target_=tests.helpers.fault_probes.SignalAt"]
SAVED = "Stopped by Ctrl-C after saving checkpoints/last.ckpt; continue with resume=true"
ACKNOWLEDGED = "Ctrl-C: stopping after this step, with a checkpoint"
# the last line of a Ctrl-C that stops at once, by where it landed
AT_ONCE = ("pspl-train: interrupted (Ctrl-C)", "Interrupted (Ctrl-C)")


def _start(folder: Path, sample_root: Path, signal_spec: str = "", *extra: str,
           resume: bool = False) -> subprocess.Popen:
    """``pspl-train`` (the console script) in a session of its own: a signal to its group reaches every
    process it starts, as Ctrl-C in a terminal does."""
    args = [PSPL_TRAIN, *RUN, f"data.root={sample_root}", f"hydra.run.dir={folder}", *extra,
            *(["resume=true"] if resume else [])]
    return subprocess.Popen(args, cwd=folder.parent, env=_env(folder.parent, signal_spec),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _env(root: Path, signal_spec: str) -> dict[str, str]:
    """Outputs under ``root``; SIGINT to the process group at the moments ``signal_spec`` names (SignalAt)."""
    return {**os.environ, "PSPL_ROOT": str(root), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": str(ROOT), "PSPL_TEST_SIGNAL": signal_spec, "PSPL_TEST_SIGNAL_GROUP": "1",
            "PSPL_TEST_SIGNUM": str(int(signal.SIGINT))}


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, out, err


def _last_ckpt(folder: Path) -> dict:
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _step(folder: Path) -> int:
    return _last_ckpt(folder)["global_step"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return _last_ckpt(folder)["state_dict"]


def _last_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def straight(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run."""
    folder = tmp_path_factory.mktemp("straight") / "run"
    status, _, err = _finish(_start(folder, sample_root))
    assert status == 0, err[-3000:]
    return folder


def test_ctrl_c_during_training_saves_stops_and_resumes_exactly(straight: Path, sample_root: Path,
                                                                tmp_path: Path) -> None:
    """Ctrl-C to the whole job (the run and its two data-loader workers) before the batch that makes step
    7: the step completes, ``last.ckpt`` holds step 7, one acknowledgement and one closing line, exit 130.
    The workers ignore it (killed by it, the run failed with a traceback at its next batch), and the resumed
    run ends with the uninterrupted run's weights."""
    folder = tmp_path / "run"
    status, out, err = _finish(_start(folder, sample_root, "step:6:all"))
    assert status == 130, err[-3000:]
    assert _last_line(err) == SAVED, err[-3000:]
    assert err.count(ACKNOWLEDGED) == 1, err[-3000:]
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err[-3000:]
    assert _step(folder) == 7
    status, _, err = _finish(_start(folder, sample_root, "step:6:all", resume=True))
    assert status == 0, err[-3000:]
    assert tensor_dicts_equal(_weights(folder), _weights(straight))


def test_a_second_ctrl_c_stops_at_once_and_says_what_is_kept(sample_root: Path, tmp_path: Path) -> None:
    """Two Ctrl-C during the validation after step 5 (the first waits for the validation to finish): the
    second stops there, without saving; the line names the checkpoint kept (the one of step 4)."""
    folder = tmp_path / "run"
    status, out, err = _finish(_start(folder, sample_root, "val:5:all,val:5:0"))
    assert status == 130, err[-3000:]
    kept = folder / "checkpoints" / "last.ckpt"
    assert _last_line(err) == (f"Interrupted (Ctrl-C); stopped at step 5 without saving; the last checkpoint "
                               f"is kept: {kept}"), err[-3000:]
    assert "Traceback" not in out + err and "Detected KeyboardInterrupt" not in out + err, err[-3000:]
    assert _step(folder) == 4


@pytest.mark.parametrize("after_s", [0.3, 1.5])
def test_ctrl_c_while_starting_says_one_line_and_leaves_no_folder(sample_root: Path, tmp_path: Path,
                                                                   after_s: float) -> None:
    """Ctrl-C while the command imports torch and Lightning (0.3 s) or sets up (1.5 s: imports, config, data
    on this machine): one line, exit 130, and the run folder it made is gone (it held nothing yet)."""
    folder = tmp_path / "run"
    proc = _start(folder, sample_root)
    time.sleep(after_s)
    os.killpg(proc.pid, signal.SIGINT)
    status, out, err = _finish(proc)
    if status == -signal.SIGINT and not out + err:  # (a loaded machine) before Python had started: the
        assert not folder.exists()  # default action, as for any program, with nothing made
        return
    assert status == 130, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    if _last_line(err) != SAVED:  # (a machine fast enough to be training at 1.5 s stops as it should there)
        assert _last_line(err).startswith(AT_ONCE), err[-3000:]
        assert not folder.exists()


def test_ctrl_c_under_ddp_saves_on_every_rank(sample_root: Path, tmp_path: Path) -> None:
    """``trainer=ddp_cpu`` (two ranks, each with two workers): one Ctrl-C to the job reaches every rank; they
    agree on a step boundary, save together and both end, exit 130 with the one line."""
    folder = tmp_path / "run"
    status, out, err = _finish(_start(folder, sample_root, "step:6:0", "trainer=ddp_cpu"))
    assert status == 130, err[-3000:]
    assert _last_line(err) == SAVED and err.count(SAVED) == 1, err[-3000:]  # said once, by rank 0
    assert err.count(ACKNOWLEDGED) == 1, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    assert _step(folder) in (7, 8)  # rank 1 may have passed the boundary of step 7 before it got the signal


def test_one_process_takes_ctrl_c_as_a_request_only_while_it_trains(fresh_stop_state: None,
                                                                    tmp_path: Path) -> None:
    """``LastCheckpoint`` arms at the start of training and disarms at its end: after the last step (the
    final evaluation, writing results) Ctrl-C stops at once again."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from pspl_lightning.callbacks.guards import LastCheckpoint

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    callback, model = LastCheckpoint(tmp_path / "checkpoints"), BoringModel()
    callback.on_train_start(trainer, model)
    assert stop_requests._state["armed"]  # (the first Ctrl-C would be recorded: the test above)
    callback.on_train_end(trainer, model)
    with pytest.raises(KeyboardInterrupt):
        stop_requests._record(signal.SIGINT, None)


def test_under_ddp_spawn_no_process_takes_ctrl_c_as_a_request(fresh_stop_state: None, tmp_path: Path) -> None:
    """The decision behind the end-to-end test below (slow): a ``ddp_spawn`` trainer's ranks and waiting
    process do not arm, so Ctrl-C raises at once in each; the waiting process's line names no step."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from pspl_lightning.callbacks.guards import LastCheckpoint, _note_what_is_kept

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    callback = LastCheckpoint(tmp_path / "checkpoints")
    callback.on_train_start(trainer, BoringModel())
    with pytest.raises(KeyboardInterrupt):
        stop_requests._record(signal.SIGINT, None)
    exc = KeyboardInterrupt()
    _note_what_is_kept(exc, trainer)
    assert exc.__notes__ == ["the ranks stopped without saving; no checkpoint was written"]


@pytest.mark.slow
def test_ctrl_c_under_ddp_spawn_stops_at_once(sample_root: Path, tmp_path: Path) -> None:
    """``trainer.strategy=ddp_spawn``: torch's spawn ends a rank quietly on a KeyboardInterrupt (status 0,
    nothing handed back), so Ctrl-C stops every process at once; one line from the waiting process, which
    knows no step, exit 130, no traceback and no wait."""
    folder = tmp_path / "run"
    status, out, err = _finish(_start(folder, sample_root, "step:6:0", "trainer=ddp_cpu",
                                      "trainer.strategy=ddp_spawn"), timeout=120)
    assert status == 130, err[-3000:]
    assert _last_line(err) == (f"Interrupted (Ctrl-C); the ranks stopped without saving; the last checkpoint "
                               f"is kept: {folder / 'checkpoints' / 'last.ckpt'}"), err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(10))
def test_ctrl_c_at_random_moments(straight: Path, sample_root: Path, tmp_path: Path, trial: int) -> None:
    """Ctrl-C to the job at a random moment from its start to past its end (start-up, data set-up, steps,
    validations, saves, the final evaluation): exit 130 with one of the known lines (0 if the run had
    finished), never a traceback; where a checkpoint was kept, the resumed run equals the uninterrupted
    one."""
    folder = tmp_path / "run"
    proc = _start(folder, sample_root)
    time.sleep(random.Random(trial).uniform(0, 25))
    os.killpg(proc.pid, signal.SIGINT)
    status, out, err = _finish(proc)
    assert "Traceback" not in out + err, err[-3000:]
    assert status in (0, 130), err[-3000:]
    if status == 130:
        assert _last_line(err) == SAVED or _last_line(err).startswith(AT_ONCE), err[-3000:]
    if (folder / "checkpoints" / "last.ckpt").exists():
        status, _, err = _finish(_start(folder, sample_root, resume=True))
        assert status == 0, err[-3000:]
        assert tensor_dicts_equal(_weights(folder), _weights(straight))
    else:  # stopped at once before the first save: the folder is gone unless it holds logged values
        assert status == 130 and (not folder.exists() or any(folder.glob("csv/metrics.csv")))


@pytest.fixture
def fresh_stop_state() -> Iterator[None]:
    """The handler's state as a new process has it, put back afterwards."""
    saved = dict(stop_requests._state)
    stop_requests._state.update(dict.fromkeys(saved, 0), owner=os.getpid())
    yield
    stop_requests._state.update(saved)


def test_the_first_ctrl_c_in_training_is_a_request_and_the_second_stops_at_once(
        fresh_stop_state: None) -> None:
    """The handler alone: outside training it raises as Python's does; armed, it records the first and
    raises at the second; the run's teardown keeps what it stopped for; in another process (a forked
    data-loader worker) it does nothing."""
    with pytest.raises(KeyboardInterrupt):
        stop_requests._record(signal.SIGINT, None)
    stop_requests.arm_interrupts(announce=False)
    stop_requests._record(signal.SIGINT, None)
    assert stop_requests.requested() == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        stop_requests._record(signal.SIGINT, None)
    stop_requests.clear()
    assert stop_requests.last_stop() == signal.SIGINT and stop_requests.requested() == 0
    with pytest.raises(KeyboardInterrupt):  # the run is over: at once again
        stop_requests._record(signal.SIGINT, None)
    stop_requests._state["owner"] = os.getpid() + 1
    stop_requests._record(signal.SIGINT, None)  # a worker: nothing recorded, nothing raised
    assert stop_requests.requested() == 0


def test_a_rank_of_several_records_ctrl_c_for_its_whole_run(fresh_stop_state: None) -> None:
    """A rank arms for its whole run: the end of its training does not disarm it (another rank may still be
    training, and waits for it in a collective); one process's run drops a Ctrl-C an earlier run in the same
    process left recorded (its teardown skipped), so the new run does not stop at its first step."""
    stop_requests.arm_interrupts(announce=False, whole_run=True)
    stop_requests.disarm_interrupts()
    stop_requests.clear()
    stop_requests._record(signal.SIGINT, None)  # recorded, not raised
    assert stop_requests.requested() == signal.SIGINT
    stop_requests._state.update(whole_run=0, armed=0)
    stop_requests.arm_interrupts(announce=False)
    assert stop_requests.requested() == 0


def test_a_stopping_rank_zero_ends_lightnings_child_observer() -> None:
    """Lightning's ``ddp`` launcher watches the other ranks from rank 0 and SIGKILLs everything when one
    ends with a non-zero status, the 130/143 of the same stop included (rank 0 then ended 137, no line).
    Released, the observer's next look ends it without a kill: here a child that exited 130 and a stand-in
    for rank 0 that must survive."""
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

    from pspl_lightning.loop_state import release_child_observer

    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(130)"])
    child.wait()
    stand_ins = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    try:
        observer = _ChildProcessObserver(main_pid=stand_ins[0].pid, child_processes=[child], sleep_period=1)
        observer.start()  # (named "child-process-observer", as Lightning's own; its first look after 1 s)
        release_child_observer()
        observer.join(timeout=10)
        assert not observer.is_alive() and stand_ins[0].poll() is None
        unreleased = _ChildProcessObserver(main_pid=stand_ins[1].pid, child_processes=[child])
        assert unreleased._run() is True  # what it does when not released: kill "rank 0"
        assert stand_ins[1].wait(timeout=10) == -signal.SIGKILL
    finally:
        for proc in stand_ins:
            proc.kill()


def test_every_entry_point_ends_a_ctrl_c_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A KeyboardInterrupt with a run's note, Lightning's ``sys.exit(1)`` after one, and one during the
    imports of a console script: each one line and exit 130. Lightning's exit 1 for another reason stays
    1."""

    def stopped() -> None:
        exc = KeyboardInterrupt()
        exc.add_note("stopped at step 3 without saving; no checkpoint was written")
        raise exc

    def lightnings_exit(context: BaseException | None) -> None:
        try:
            if context is not None:
                raise context
        except BaseException:
            sys.exit(1)
        sys.exit(1)

    with pytest.raises(SystemExit) as ended:
        one_line_failures()(stopped)()
    assert ended.value.code == 130
    assert capsys.readouterr().err.strip() == ("Interrupted (Ctrl-C); stopped at step 3 without saving; no "
                                               "checkpoint was written")
    with pytest.raises(SystemExit) as ended:
        one_line_failures()(lightnings_exit)(KeyboardInterrupt())
    assert ended.value.code == 130 and capsys.readouterr().err.strip() == "Interrupted (Ctrl-C)"
    with pytest.raises(SystemExit) as ended:
        one_line_failures()(lightnings_exit)(None)
    assert ended.value.code == 1 and capsys.readouterr().err == ""


def test_a_ctrl_c_during_a_console_scripts_imports_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    def importing(name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(entry.importlib, "import_module", importing)
    monkeypatch.setattr(entry, "ignore_from_now_on", lambda: None)  # (it would leave pytest ignoring signals)
    monkeypatch.setattr(entry.signal, "signal", lambda *args: None)
    with pytest.raises(SystemExit) as ended:
        entry.data()
    assert ended.value.code == 130
    assert capsys.readouterr().err.strip() == "pspl-data: interrupted (Ctrl-C) while starting"


def test_ctrl_c_to_a_sweep_of_jobs_in_one_process_ends_the_sweep(sample_root: Path, tmp_path: Path) -> None:
    """``pspl-train -m`` with Hydra's basic launcher: Ctrl-C during job 0 saves its checkpoint and ends the
    sweep with 130; job 1 never starts."""
    args = [PSPL_TRAIN, "-m", "model=tiny", "logger=csv", "trainer.max_steps=4", "data.batch_size=4",
            "callbacks.progress_bar=null", "seed=1,2", "trainer.enable_model_summary=false",
            f"data.root={sample_root}", "+callbacks.signal_at._target_=tests.helpers.fault_probes.SignalAt",
            f"hydra.sweep.dir={tmp_path}/s"]
    proc = subprocess.run(args, cwd=tmp_path, env=_env(tmp_path, "step:2:0"), capture_output=True, text=True,
                          timeout=300, start_new_session=True)
    assert proc.returncode == 130, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert _last_line(proc.stderr) == SAVED, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _step(tmp_path / "s" / "0") == 3
    assert not (tmp_path / "s" / "1").exists()
