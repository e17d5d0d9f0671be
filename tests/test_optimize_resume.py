"""``pspl-data optimize`` in recorded parts: a run stopped anywhere (Ctrl-C, a kill, litdata's index merged
but the part not yet recorded) is continued by the same command and gives the items of the straight run,
each once; another command into that folder is refused in one line."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pspl_lightning.cli.data import main as data_main
from pspl_lightning.data import optimize as optimize_mod
from pspl_lightning.data.io import write_png
from pspl_lightning.data.optimize import STATE, OptimizeInterrupted, optimize_folder

IMAGES = 10
PART = 4  # parts of 4, 4 and 2 images


def _image(i: int) -> np.ndarray:
    img = np.random.default_rng(i).integers(0, 256, (40 + 2 * i, 56, 3), dtype=np.uint8)
    img[..., 0] = 10 + 20 * i
    return img


def _items(folder: Path) -> dict[str, np.ndarray]:
    """Every item of an optimized folder by name; a name read twice fails."""
    import litdata

    dataset = litdata.StreamingDataset(str(folder))
    items: dict[str, np.ndarray] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["name"] not in items, f"{item['name']} stored twice"
        items[item["name"]] = np.asarray(item["image"])
    return items


@pytest.fixture(scope="module")
def hr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 images in two subfolders (LSDIR's nesting)."""
    root = tmp_path_factory.mktemp("resume") / "HR"
    for i in range(IMAGES):
        write_png(root / f"{i % 2:04d}" / f"{i:04d}.png", _image(i))
    return root


@pytest.fixture(scope="module")
def straight(hr: Path) -> dict[str, Any]:
    out = hr.parent / "straight"
    result = optimize_folder(hr, str(out), workers=2, progress=False, min_size=32, part_images=PART)
    return {"out": out, "result": result, "items": _items(out),
            "sidecar": json.loads((out / "pspl_images.json").read_text())}


def test_parts_store_every_image_once_and_leave_no_record(straight: dict[str, Any]) -> None:
    assert straight["result"].images == IMAGES
    assert sorted(straight["items"]) == sorted(f"{i % 2:04d}/{i:04d}" for i in range(IMAGES))
    for i in range(IMAGES):
        np.testing.assert_array_equal(straight["items"][f"{i % 2:04d}/{i:04d}"], _image(i))
    assert not (straight["out"] / STATE).exists()
    assert straight["sidecar"]["images"] == IMAGES and len(straight["sidecar"]["sizes"]) == IMAGES
    index = json.loads((straight["out"] / "index.json").read_text())
    assert sum(c["chunk_size"] for c in index["chunks"]) == IMAGES
    assert {c["filename"] for c in index["chunks"]} == {p.name for p in straight["out"].glob("*.bin")}


def _same_as_straight(out: Path, straight: dict[str, Any]) -> None:
    items = _items(out)
    assert sorted(items) == sorted(straight["items"])
    for name, image in items.items():
        np.testing.assert_array_equal(image, straight["items"][name])
    assert json.loads((out / "pspl_images.json").read_text())["sizes"] == straight["sidecar"]["sizes"]
    assert not (out / STATE).exists()


@pytest.mark.parametrize("moment", ["before_part_2", "index_merged_not_recorded", "torn_chunk"])
def test_interrupted_run_is_continued_by_the_same_command(hr: Path, straight: dict[str, Any],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          moment: str) -> None:
    """Ctrl-C at three moments of the second part: before it starts, after litdata merged its chunks into
    the index but before the part was recorded (its images would be stored twice if trusted), and with a
    chunk file of it on disk."""
    import litdata

    real, calls = litdata.optimize, []

    def interrupted(**kwargs: Any) -> None:
        calls.append(kwargs["inputs"])
        if len(calls) == 2:
            if moment == "index_merged_not_recorded":
                real(**kwargs)
            elif moment == "torn_chunk":
                (tmp_path / "out" / "chunk-1-7.bin").write_bytes(b"\0" * 100)
            raise KeyboardInterrupt
        real(**kwargs)

    monkeypatch.setattr(litdata, "optimize", interrupted)
    with pytest.raises(OptimizeInterrupted, match=rf"^interrupted after {PART} of {IMAGES} images; "
                                                  rf".*out keeps them: run the same command again to write "
                                                  rf"the other {IMAGES - PART}$"):
        optimize_folder(hr, str(tmp_path / "out"), workers=2, progress=False, min_size=32, part_images=PART)
    assert json.loads((tmp_path / "out" / STATE).read_text())["done"] == PART
    monkeypatch.setattr(litdata, "optimize", real)
    result = optimize_folder(hr, str(tmp_path / "out"), workers=2, progress=False, min_size=32,
                             part_images=PART)
    assert result.images == IMAGES
    _same_as_straight(tmp_path / "out", straight)


def test_first_part_interrupted_leaves_nothing(hr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    import litdata

    def interrupted(**kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(litdata, "optimize", interrupted)
    with pytest.raises(OptimizeInterrupted, match=rf"^interrupted before the first part of {PART} images was "
                                                  rf"written; nothing was kept$"):
        optimize_folder(hr, str(tmp_path / "out"), workers=2, progress=False, min_size=32, part_images=PART)
    assert not (tmp_path / "out").exists()


def test_another_command_into_an_unfinished_folder_is_one_line(hr: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    names = sorted(f"{i % 2:04d}/{i:04d}.png" for i in range(IMAGES))
    settings = {"input": str(hr.resolve()), "images": IMAGES, "format": "uint8", "chunk_bytes": "64MB",
                "min_size": 32, "files": hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]}
    (out / STATE).write_text(json.dumps({"settings": settings, "done": 0, "rows": [], "index": None}))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(SystemExit) as exc:
        data_main(["optimize", f"input={hr}", f"output={out}", "format=png", "min_size=32"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"output={out} holds an unfinished optimize with format=uint8 (now png): run that command again to "
        f"finish it, or choose a new folder")
    assert sorted(p.name for p in out.iterdir()) == before
    # the same settings over another list of images (one renamed since): refused too
    settings["files"] = hashlib.sha1(b"other").hexdigest()[:16]
    (out / STATE).write_text(json.dumps({"settings": settings, "done": 0, "rows": [], "index": None}))
    with pytest.raises(SystemExit):
        data_main(["optimize", f"input={hr}", f"output={out}", "min_size=32"])
    assert "holds an unfinished optimize with other image files: run" in capsys.readouterr().err


def _command(hr: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pspl_lightning.cli.data", "optimize", f"input={hr}", f"output={out}",
            "workers=2", "min_size=32", "part_images=3", "format=uint8"]


def _killed_then_continued(hr: Path, out: Path, delay: float, sig: int) -> None:
    """``pspl-data optimize`` (parts of 3) gets ``sig`` (its whole process group, as a Ctrl-C or a job
    scheduler sends it: litdata's workers too) ``delay`` seconds in; then the same command runs to the end.
    Stopped, it says so: SIGINT exits 130 with one line, never 0 (litdata's own handler exits 0)."""
    proc = subprocess.Popen(_command(hr, out), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"optimize did not end within 60 s of signal {sig}")
    if proc.returncode == 0:  # it ended before the signal: a whole set, never written into again
        assert "wrote 10 images" in stdout and not (out / STATE).exists()
        return
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("interrupted "), stderr
    else:
        assert proc.returncode == -sig
    again = subprocess.run(_command(hr, out), timeout=300, capture_output=True, text=True)
    assert again.returncode == 0 and "wrote 10 images" in again.stdout, again.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_process_is_continued(hr: Path, straight: dict[str, Any], tmp_path: Path, sig: int) -> None:
    """A real signal to the process group in the middle of the run (about the second of four parts)."""
    _killed_then_continued(hr, tmp_path / "out", 6.0, sig)
    _same_as_straight(tmp_path / "out", straight)


@pytest.mark.slow
def test_killed_at_random_moments_is_continued(hr: Path, straight: dict[str, Any], tmp_path: Path) -> None:
    rng = np.random.default_rng(int(time.time()))
    for trial in range(8):
        delay, sig = float(rng.uniform(1.0, 14.0)), [signal.SIGKILL, signal.SIGINT][trial % 2]
        out = tmp_path / f"out{trial}"
        _killed_then_continued(hr, out, delay, sig)
        try:
            _same_as_straight(out, straight)
        except AssertionError as exc:
            raise AssertionError(f"signal {sig} after {delay:.2f} s: {exc}") from None


def test_part_size_grows_with_the_set() -> None:
    assert optimize_mod._part_size(800) == 500 and optimize_mod._part_size(84_991) == 1700
