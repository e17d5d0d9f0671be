"""scripts/plot_pace.py and scripts/compare_runs.py draw their PNGs; compare_runs reads runs made here
(CSV and W&B offline logs) to the same numbers the runs report."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import matplotlib.image
import numpy as np
import pytest
from omegaconf import DictConfig, open_dict

from pspl_lightning.cli.train import train
from pspl_lightning.losses import PSPLLoss

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"pspl_scripts_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


plot_pace = load_script("plot_pace")
SMALL = ["data.patch_size=32", "data.batch_size=4", "data.repeat=2", "trainer.log_every_n_steps=1",
         "trainer.enable_model_summary=false", "schedule.lr_milestones=[]", "callbacks.progress_bar=null"]
compare_runs = load_script("compare_runs")


def png_size(path: Path) -> tuple[int, int]:
    img = matplotlib.image.imread(path)
    return img.shape[1], img.shape[0]


def test_plot_pace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fig"
    steps = [0, 999, 3999]
    paths = plot_pace.main(["--steps", *map(str, steps), "--crop", "64", "--out", str(out)])
    assert paths == [out / "pace_curves.png", out / "pace_maps.png"]
    width, height = png_size(paths[0])
    assert width >= 600 and height >= 400
    width, height = png_size(paths[1])
    assert width >= 5 * 150 and height >= 200  # HR, degraded and three maps side by side
    printed = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    sigmas = [float(line[3]) for line in printed]
    assert sigmas == [0.001, 1.0, 4.0]  # (step + 1) / 1000
    means = [float(line[6]) for line in printed]
    # the mean weight over the image, recomputed here from the PSPL formula on the same pair
    hr, degraded = plot_pace.degrade(plot_pace.load_photo("astronaut", 64), 4)
    loss = PSPLLoss()
    for step, mean in zip(steps, means, strict=True):
        w = loss.weight_map(plot_pace._to_tensor(degraded), plot_pace._to_tensor(hr), loss.sigma_at(step))
        assert mean == pytest.approx(float(w.mean()), abs=1e-4)
    assert means[0] == pytest.approx(0.0, abs=1e-6) and 0 < means[1] < means[2] < 2.0

    with pytest.raises(FileExistsError, match="pace_curves.png.* exist"):
        plot_pace.main(["--steps", "0", "--crop", "32", "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="--image no_such_photo: neither a file nor"):
        plot_pace.main(["--image", "no_such_photo", "--out", str(tmp_path / "other")])


def test_pace_figure_numbers_of_reproduce_md() -> None:
    """docs/REPRODUCE.md: with the default 256-pixel crop of astronaut (bicubic x4), weights ~0 for all but
    the hardest pixels at step 249, a mean of about 0.24 at step 999 and about 1.7 at step 3999."""
    hr, degraded = plot_pace.degrade(plot_pace.load_photo("astronaut", 256), 4)
    loss = PSPLLoss()

    def weights(step: int):
        return loss.weight_map(plot_pace._to_tensor(degraded), plot_pace._to_tensor(hr), loss.sigma_at(step))

    assert float((weights(249) < 1e-3).float().mean()) > 0.99
    assert float(weights(999).mean()) == pytest.approx(0.24, abs=0.005)
    assert float(weights(3999).mean()) == pytest.approx(1.7, abs=0.05)


@pytest.fixture
def tiny_runs(train_cfg: Callable[..., DictConfig], tmp_path: Path) -> dict[str, Path]:
    """Two short runs (PSPL and L1) of the tiny network, logged to CSV, each in its own folder."""
    runs = {}
    for loss in ("pspl", "l1"):
        cfg = train_cfg("model=tiny", f"loss={loss}", "trainer.max_steps=6", "trainer.val_check_interval=2",
                        "optimizer.lr=1e-3", "logger=csv", *SMALL, tiny=False)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / f"run_{loss}")
        train(cfg)
        runs[loss] = tmp_path / f"run_{loss}"
    return runs


def _csv_curve(run: Path) -> dict[int, float]:
    """val/psnr_y by optimizer steps taken, read here from the CSV (Lightning logs step index = taken - 1)."""
    with (run / "csv" / "metrics.csv").open() as f:
        return {int(r["step"]) + 1: float(r["val/psnr_y"]) for r in csv.DictReader(f) if r["val/psnr_y"]}


def test_compare_runs_from_csv(tiny_runs: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    expected = {name: _csv_curve(run) for name, run in tiny_runs.items()}
    for name, run in tiny_runs.items():
        assert sorted(expected[name]) == [2, 4, 6]
        final = json.loads((run / "metrics.json").read_text())["val/psnr_y"]
        assert expected[name][6] == pytest.approx(final, abs=1e-5)
    values = sorted(v for curve in expected.values() for v in curve.values())
    target = (values[0] + values[-1]) / 2
    out = tmp_path / "figs" / "compare.png"
    curves = compare_runs.main([str(tiny_runs["pspl"]), str(tiny_runs["l1"]), "--labels", "PSPL", "L1",
                                "--target", f"{target}", "--out", str(out)])
    assert [c.label for c in curves] == ["PSPL", "L1"]
    for curve, name in zip(curves, ("pspl", "l1"), strict=True):
        assert curve.steps == sorted(expected[name])
        assert curve.values == pytest.approx([expected[name][s] for s in curve.steps], abs=1e-9)
        first = next((s for s in sorted(expected[name]) if expected[name][s] >= target), None)
        assert curve.first_reach(target) == first
    assert any(c.first_reach(target) is not None for c in curves)
    width, height = png_size(out)
    assert width >= 600 and height >= 400
    table = capsys.readouterr().out
    assert "PSPL" in table and "L1" in table and f"wrote {out}" in table

    with pytest.raises(FileExistsError, match="compare.png exists; pass --overwrite"):
        compare_runs.main([str(tiny_runs["l1"]), "--out", str(out)])
    with pytest.raises(ValueError, match="no values of 'val/nothing'"):
        compare_runs.main([str(tiny_runs["l1"]), "--metric", "val/nothing", "--out", str(tmp_path / "x.png")])
    with pytest.raises(FileNotFoundError, match="no csv/metrics.csv .* and no wandb"):
        compare_runs.main([str(tmp_path / "figs"), "--out", str(tmp_path / "y.png")])


def test_compare_runs_reads_wandb_offline_runs(train_cfg: Callable[..., DictConfig], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A run logged by WandbLogger offline (no network) reads back to the numbers the run reported."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = train_cfg("model=tiny", "loss=l1", "logger=wandb", "trainer.max_steps=4",
                    "trainer.val_check_interval=2", *SMALL, tiny=False)
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    (log,) = run.glob("wandb/offline-run-*/run-*.wandb")
    # wandb's own service process writes the file; on a loaded machine its last records can land a moment
    # after wandb.finish() returns
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("val/psnr_y" in r for r in compare_runs.read_wandb(log)):
        time.sleep(0.5)
    out = tmp_path / "wandb.png"
    (curve,) = compare_runs.main([str(run), "--target", "0", "--out", str(out)])
    assert curve.source.suffix == ".wandb"
    assert curve.steps == [2, 4]
    assert curve.values[-1] == pytest.approx(metrics["val/psnr_y"], abs=1e-5)  # loggers get float32
    assert curve.first_reach(0.0) == 2 and np.all(np.isfinite(curve.values))
    assert png_size(out)[0] >= 600
