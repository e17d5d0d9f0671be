"""Every mistake a user can make ends in one line naming the key or the file, exit status 2, no traceback.

Each case runs the real entry point in a subprocess, as a user would (docs/FAULTS.md lists them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.multiprocessing import ProcessRaisedException

from pspl_lightning.cli.failures import expected_failure, failure_line
from pspl_lightning.errors import ConfigError, DataError, DataNotFoundError, TrainingDiverged


def _run(module: str, *args: str, root: Path, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PSPL_ROOT": str(root), "WANDB_MODE": "disabled"}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run([sys.executable, "-m", f"pspl_lightning.cli.{module}", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def _assert_one_line(proc: subprocess.CompletedProcess, *names: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert 'File "' not in out and "Traceback" not in out, out[-2000:]
    line = next(ln for ln in out.splitlines() if names[0] in ln)
    assert all(name in line for name in names), line


@pytest.fixture
def bad_image_folder(tmp_path: Path, sample_root: Path) -> Path:
    folder = tmp_path / "mine" / "HR"
    folder.mkdir(parents=True)
    (folder / "notes.png").write_text("not an image")
    for name in ("astronaut", "coffee"):
        (folder / f"{name}.png").write_bytes((sample_root / "train" / "HR" / "astronaut.png").read_bytes())
    return folder


def test_div2k_root_without_the_layout(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _run("train", "data=div2k", f"data.root={tmp_path / 'empty'}", root=tmp_path)
    _assert_one_line(proc, f"DIV2K folder {tmp_path / 'empty' / 'DIV2K_train_HR'} does not exist",
                     "expected the DIV2K layout")


def test_images_smaller_than_the_patch(tmp_path: Path, sample_root: Path) -> None:
    proc = _run("train", f"data.root={sample_root}", "data.patch_size=1024", root=tmp_path)
    _assert_one_line(proc, "smaller than the LR patch of 512")


def test_a_file_that_is_not_an_image(tmp_path: Path, bad_image_folder: Path) -> None:
    proc = _run("train", "data=folder", f"data.root={bad_image_folder.parent}", "data.hr_dir=HR",
                "data.val_hr_dir=HR", "data.cache_dir=null", root=tmp_path)
    _assert_one_line(proc, str(bad_image_folder / "notes.png"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the mistake is asking for a GPU where there is none")
def test_gpu_trainer_without_cuda(tmp_path: Path) -> None:
    proc = _run("train", "trainer=gpu", root=tmp_path)
    _assert_one_line(proc, "trainer.accelerator=gpu asks for a GPU", "trainer=cpu", "trainer=ddp_cpu")


def test_run_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = _run("train", f"hydra.run.dir={blocker / 'run'}", root=tmp_path)
    _assert_one_line(proc, f"Cannot create the run folder {blocker / 'run'}", "hydra.run.dir=<folder>")


def test_eval_and_upscale_with_a_missing_checkpoint(tmp_path: Path) -> None:
    _assert_one_line(_run("eval", "ckpt=/nonexistent/x2.ckpt", root=tmp_path),
                     "checkpoint /nonexistent/x2.ckpt does not exist")
    proc = _run("upscale", "ckpt=/nonexistent/x2.ckpt", f"input={tmp_path / 'nowhere'}",
                f"output={tmp_path / 'sr'}", root=tmp_path)
    _assert_one_line(proc, f"input={tmp_path / 'nowhere'} does not exist")


def test_full_error_shows_the_traceback(tmp_path: Path) -> None:
    proc = _run("train", "loss.alpha=0", "loss.beta=0", root=tmp_path, full_error=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_errors_found_through_their_wrappers() -> None:
    """Hydra's instantiate wraps a constructor's error; a spawned DDP rank sends only its traceback text."""
    from hydra.errors import InstantiationException

    try:
        try:
            raise ConfigError("data.batch_size=0 is not allowed")
        except ConfigError as inner:
            raise InstantiationException("Error in call to target") from inner
    except InstantiationException as outer:
        assert isinstance(expected_failure(outer), ConfigError)
    rank_trace = ("\n\n-- Process 1 terminated with the following error:\n"
                  'Traceback (most recent call last):\n  File "x.py", line 1, in f\n'
                  "pspl_lightning.errors.DataNotFoundError: DIV2K folder /d does not exist; "
                  "expected the DIV2K layout\n")
    err = expected_failure(ProcessRaisedException(rank_trace, 1, 1234))
    assert isinstance(err, DataNotFoundError) and failure_line(err) == (
        "DIV2K folder /d does not exist; expected the DIV2K layout", 2)
    image = "\npspl_lightning.data.io.ImageReadError: /d/notes.png: cannot decode image\n"
    assert str(expected_failure(ProcessRaisedException(image, 0, 1))) == "/d/notes.png: cannot decode image"
    assert failure_line(TrainingDiverged("non-finite loss nan at step 3"))[1] == 3
    assert expected_failure(RuntimeError("a bug")) is None
    assert expected_failure(ProcessRaisedException("\nRuntimeError: a bug in a rank\n", 0, 1)) is None
    assert isinstance(expected_failure(DataError("x")), DataError)


@pytest.mark.slow
def test_a_spawned_rank_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _run("train", "trainer=ddp_cpu", "trainer.strategy=ddp_spawn", "data=div2k",
                f"data.root={tmp_path / 'empty'}", root=tmp_path)
    _assert_one_line(proc, f"DIV2K folder {tmp_path / 'empty' / 'DIV2K_train_HR'} does not exist")
