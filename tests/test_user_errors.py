"""Every mistake a user can make ends in one line naming the key or the file, exit status 2, no traceback
(and a diverged run in one line, exit status 3).

Each case runs the real entry point in a subprocess, as a user would (docs/FAULTS.md lists them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.multiprocessing import ProcessRaisedException

from pspl_lightning.cli.failures import expected_failure, failure_line
from pspl_lightning.errors import ConfigError, DataError, DataNotFoundError, TrainingDiverged
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]  # the repository: the probes in tests/ import from there


def _env(root: Path, full_error: bool = False) -> dict[str, str]:
    env = {**os.environ, "PSPL_ROOT": str(root), "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return env


def _assert_one_line(proc: subprocess.CompletedProcess, *names: str) -> None:
    """Exit status 2 and exactly one line, stdout and stderr together, naming ``names``."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert 'File "' not in out and "Traceback" not in out, out[-2000:]
    assert len(out.splitlines()) == 1, out[-2000:]  # no notice before it, not said by every wrapper
    assert all(name in out for name in names), out


def _assert_said_once(proc: subprocess.CompletedProcess, name: str) -> None:
    """Exit status 2, no traceback, and the line naming ``name`` once (a spawned rank's mistake comes after
    the process group's own start-up lines)."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out[-2000:]
    assert sum(name in line for line in out.splitlines()) == 1, out[-2000:]


def _cases(root: Path, sample_root: Path) -> dict[str, tuple[str, list[str], bool]]:
    """Each mistake as (entry point, arguments, HYDRA_FULL_ERROR), with the inputs it needs made in root."""
    (root / "empty").mkdir()
    images = root / "mine" / "HR"
    images.mkdir(parents=True)
    (images / "notes.png").write_text("not an image")
    for name in ("astronaut", "coffee"):
        (images / f"{name}.png").write_bytes((sample_root / "train" / "HR" / "astronaut.png").read_bytes())
    (root / "a_file").write_text("")
    cases = {
        "div2k_layout": ("train", ["data=div2k", f"data.root={root / 'empty'}"], False),
        # every sample image below the patch (with one that fits, training skips the others and goes on)
        "small_images": ("train", [f"data.root={sample_root}", "data.patch_size=2048"], False),
        "not_an_image": ("train", ["data=folder", f"data.root={images.parent}", "data.hr_dir=HR",
                                   "data.val_hr_dir=HR", "data.cache_dir=null"], False),
        "gpu_trainer": ("train", ["trainer=gpu"], False),
        "run_folder": ("train", [f"hydra.run.dir={root / 'a_file' / 'run'}"], False),
        "eval_ckpt": ("eval", ["ckpt=/nonexistent/x2.ckpt"], False),
        "upscale_input": ("upscale", ["ckpt=/nonexistent/x2.ckpt", f"input={root / 'nowhere'}",
                                      f"output={root / 'sr'}"], False),
        "full_error": ("train", ["loss.alpha=0", "loss.beta=0"], True),
        "full_error_late": ("train", ["data.patch_size=33"], True),
        "batch_size": ("train", ["data.batch_size=0", "logger=csv"], False),
        "scale": ("train", ["data.scale=5", "logger=csv"], False),
        "base_loss": ("train", ["loss.base=l3"], False),
        "max_steps": ("train", ["schedule.max_steps=-3"], False),
        "huge_lr": ("train", [*TINY, f"data.root={sample_root}", "optimizer.lr=1e38", "logger=csv"], False),
        "export_ckpt": ("export", ["ckpt=/nonexistent/x2.ckpt", f"output={root / 'x2.pth'}"], False),
        "bad_degradation": ("train", [*TINY, f"data.root={sample_root}", "degradation=bd",
                                      "degradation.kernel_size=6"], False),
        "diverged": ("train", [*TINY, f"data.root={sample_root}", "loss=l1", "trainer.max_steps=4",
                               "loss._target_=tests.helpers.probes.NaNOnCall", "+loss.bad_call=1"], False),
    }
    spawned = ["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"]
    cases["rank_error"] = ("train", [*spawned, *cases["div2k_layout"][1]], False)
    cases["unknown_key"] = ("train", ["data.no_such_key=1"], False)
    cases["moved_key"] = ("train", ["model.init_from=/runs/x2/last.ckpt"], False)
    cases["data_layout"] = ("data", ["prepare", "data=div2k", f"data.root={root / 'empty'}"], False)
    if torch.cuda.is_available():  # there the GPU trainer is no mistake: it would train
        del cases["gpu_trainer"]
    return cases


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory: pytest.TempPathFactory, sample_root: Path
             ) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    """Every case through its entry point's ``main()`` in a process of its own, forked after the heavy
    imports (tests/helpers/cli_runner.py: each case costs its own work, not 5-7 s of imports)."""
    root = tmp_path_factory.mktemp("mistakes")
    cases = {}
    for name, (module, args, full_error) in _cases(root, sample_root).items():
        folder = root / name
        folder.mkdir()
        cases[name] = {"entry": module, "args": args, "cwd": str(folder), "out": str(folder / "out"),
                       "env": _env(folder, full_error)}
    (root / "cases.json").write_text(json.dumps(cases))
    runner = subprocess.run([sys.executable, "-m", "tests.helpers.cli_runner", str(root / "cases.json")],
                            cwd=ROOT, env=_env(root), capture_output=True, text=True, timeout=600)
    assert runner.returncode == 0, runner.stdout[-2000:] + runner.stderr[-2000:]
    status = json.loads((root / "cases.json.status").read_text())
    done = {name: subprocess.CompletedProcess(case["args"], status[name], Path(case["out"]).read_text(), "")
            for name, case in cases.items()}
    return root, done


def _no_run_folder(mistakes, case: str) -> None:
    """The mistake left no folder behind: not its run folder, nor the outputs/ folder made for it."""
    outputs = mistakes[0] / case / "outputs"
    assert not outputs.exists(), sorted(str(p) for p in outputs.rglob("*"))


def test_div2k_root_without_the_layout(mistakes) -> None:
    root, proc = mistakes[0], mistakes[1]["div2k_layout"]
    _assert_one_line(proc, f"DIV2K folder {root / 'empty' / 'DIV2K_train_HR'} does not exist",
                     "expected the DIV2K layout")
    _no_run_folder(mistakes, "div2k_layout")


def test_a_spawned_rank_error_is_one_line(mistakes) -> None:
    """The same mistake found inside a ddp_spawn rank: one line, not the process group's trace."""
    _assert_said_once(mistakes[1]["rank_error"],
                     f"DIV2K folder {mistakes[0] / 'empty' / 'DIV2K_train_HR'} does not exist")
    _no_run_folder(mistakes, "rank_error")


def test_images_smaller_than_the_patch(mistakes) -> None:
    _assert_one_line(mistakes[1]["small_images"],
                     "all 6 training images are smaller than the LR patch of 1024")
    _no_run_folder(mistakes, "small_images")


def test_a_file_that_is_not_an_image(mistakes) -> None:
    _assert_one_line(mistakes[1]["not_an_image"], str(mistakes[0] / "mine" / "HR" / "notes.png"))
    _no_run_folder(mistakes, "not_an_image")


def test_hydra_rejects_an_unknown_key_with_status_1(mistakes) -> None:
    proc = mistakes[1]["unknown_key"]
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "Could not override 'data.no_such_key'" in proc.stdout and "Traceback" not in proc.stdout


def test_every_entry_point_says_a_mistake_the_same_way(mistakes) -> None:
    """pspl-data prepare finds the DIV2K layout mistake in the line pspl-train gives for it."""
    _assert_one_line(mistakes[1]["data_layout"], "does not exist", "expected the DIV2K layout")
    lines = [next(ln for ln in mistakes[1][case].stdout.splitlines() if "DIV2K folder" in ln)
             for case in ("div2k_layout", "data_layout")]
    assert lines[0] == lines[1] and lines[0].startswith("DIV2K folder"), lines


def test_a_moved_key_names_its_new_place(mistakes) -> None:
    _assert_one_line(mistakes[1]["moved_key"], "model.init_from moved: use init_from=<file>")
    _no_run_folder(mistakes, "moved_key")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the mistake is asking for a GPU where there is none")
def test_gpu_trainer_without_cuda(mistakes) -> None:
    _assert_one_line(mistakes[1]["gpu_trainer"], "trainer.accelerator=gpu asks for a GPU", "trainer=cpu",
                     "trainer=ddp_cpu")


def test_run_folder_that_cannot_be_created(mistakes) -> None:
    blocked = mistakes[0] / "a_file" / "run"
    _assert_one_line(mistakes[1]["run_folder"], f"Cannot create the run folder {blocked}",
                     "hydra.run.dir=<folder>")


def test_eval_upscale_and_export_with_a_missing_file_leave_no_folder(mistakes) -> None:
    _assert_one_line(mistakes[1]["eval_ckpt"], "checkpoint /nonexistent/x2.ckpt does not exist")
    _assert_one_line(mistakes[1]["upscale_input"], f"input={mistakes[0] / 'nowhere'} does not exist")
    _assert_one_line(mistakes[1]["export_ckpt"], "checkpoint /nonexistent/x2.ckpt does not exist")
    for case in ("eval_ckpt", "upscale_input", "export_ckpt"):
        _no_run_folder(mistakes, case)


def test_mistakes_found_after_torch_loads_are_one_line(mistakes) -> None:
    """No "Seed set to 42" (twice) before the line: nothing is printed before the constructors ran."""
    _assert_one_line(mistakes[1]["batch_size"], "Invalid configuration: data.batch_size=0 is not allowed")
    _assert_one_line(mistakes[1]["scale"], "EDSR supports model.scale 2, 3 or 4, got 5")
    _assert_one_line(mistakes[1]["base_loss"],
                     "loss.base must be one of ['charbonnier', 'l1', 'mse'], got 'l3'")
    _assert_one_line(mistakes[1]["max_steps"], "schedule.max_steps=-3")
    for case in ("batch_size", "scale", "base_loss", "max_steps"):
        _no_run_folder(mistakes, case)


def test_a_learning_rate_that_overflows_leaves_no_run_folder(mistakes) -> None:
    proc = mistakes[1]["huge_lr"]
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert proc.stdout.splitlines()[-1].startswith("optimizer.lr=1e+38 overflows float32")
    _no_run_folder(mistakes, "huge_lr")


def test_full_error_shows_the_traceback_and_still_exits_2(mistakes) -> None:
    for case in ("full_error", "full_error_late"):  # found before torch loads, and by a constructor
        proc = mistakes[1][case]
        assert proc.returncode == 2 and "Traceback" in proc.stdout and "ConfigError" in proc.stdout, case
        _no_run_folder(mistakes, case)


def test_pspl_train_reports_a_bad_degradation_in_one_line(mistakes) -> None:
    _assert_one_line(mistakes[1]["bad_degradation"],
                     "Invalid configuration: degradation.kernel_size=6 is not allowed: expected an odd")


def test_cli_exits_3_on_divergence(mistakes) -> None:
    proc = mistakes[1]["diverged"]
    assert proc.returncode == 3, proc.stdout[-3000:]
    assert "Training stopped: non-finite training loss nan at step 1; stopped" in proc.stdout
    assert "Traceback" not in proc.stdout
    (run,) = (mistakes[0] / "diverged" / "outputs" / "train" / "runs").iterdir()  # kept, with the line
    assert "Training stopped: non-finite training loss nan at step 1" in (run / "train.log").read_text()


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
