"""``pspl-data degrade`` and ``pspl-eval degradation=...`` on small folders made here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from pspl_lightning.archs import EDSR
from pspl_lightning.cli.data import main as data_main
from pspl_lightning.cli.eval import evaluate
from pspl_lightning.data.degrade import degrade_image
from pspl_lightning.data.io import read_image, write_png
from pspl_lightning.degradations import BlurDown, NoisyBicubic
from pspl_lightning.errors import ConfigError
from pspl_lightning.inference.loading import FORMAT
from tests.conftest import compose_config


@pytest.fixture
def hr_dir(tmp_path: Path, sample_root: Path) -> Path:
    """Two HR photos (odd sizes: cropped to the scale) and a JPEG, whose LR is written as <name>.png."""
    folder = tmp_path / "HR"
    write_png(folder / "chelsea.png", read_image(sample_root / "val" / "HR" / "chelsea.png")[:97, :131])
    write_png(folder / "coffee.png", read_image(sample_root / "val" / "HR" / "coffee.png")[:90, :121])
    rocket = read_image(sample_root / "train" / "HR" / "rocket.png")[:64, :64]
    Image.fromarray(rocket).save(folder / "rocket.jpg")
    return folder


def _weights(path: Path, scale: int) -> Path:
    """Exported weights of a tiny EDSR (random init) at ``scale``."""
    model = {"_target_": "pspl_lightning.archs.EDSR", "scale": scale, "n_resblocks": 1, "n_feats": 8,
             "res_scale": 1.0}
    state = EDSR(scale, 1, 8).state_dict()
    torch.save({"format": FORMAT, "model": model, "scale": scale, "state_dict": state}, path)
    return path


def _quiet() -> Console:
    return Console(file=io.StringIO())


def test_degrade_writes_one_png_per_image(hr_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "LR"
    data_main(["degrade", f"input={hr_dir}", f"output={out}", "degradation=bd", "data.scale=3"])
    assert "wrote 3 LR images (degradation=bd, x3, seed 0)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.png", "coffee.png", "rocket.png"]
    lr = read_image(out / "chelsea.png")
    assert lr.shape == (32, 43, 3)  # 97 x 131 cropped to 96 x 129, / 3
    expect = degrade_image(BlurDown(3), read_image(hr_dir / "chelsea.png"), "chelsea")
    np.testing.assert_array_equal(lr, expect)


def test_degrade_seed_and_overwrite(hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "LR"
    args = ["degrade", f"input={hr_dir}", f"output={out}", "degradation=dn", "data.scale=2"]
    data_main([*args, "seed=1"])
    first = read_image(out / "coffee.png")
    expect = degrade_image(NoisyBicubic(2, seed=1), read_image(hr_dir / "coffee.png"), "coffee")
    np.testing.assert_array_equal(first, expect)
    with pytest.raises(SystemExit) as exc:  # existing files are kept unless asked
        data_main([*args, "seed=2"])
    assert exc.value.code == 2 and "3 of the LR images exist already" in capsys.readouterr().err
    data_main([*args, "seed=2", "overwrite=true"])
    assert not np.array_equal(read_image(out / "coffee.png"), first)  # another seed, other noise


@pytest.mark.parametrize(("extra", "message"), [
    (["degradation=blurry"], "Could not find 'degradation/blurry'; Available options in 'degradation': bd, "
                             "bicubic, dn, realistic"),
    (["degradation=bd", "degradation.kernel_size=8"], "degradation.kernel_size=8 is not allowed"),
    (["degradation=dn", "data.scale=6"], "degradation=dn supports data.scale 2, 3, 4, got 6"),
    (["degradation=realistic", "degradation.stage1.jpeg_quality=[90,30]"], "min 90 > max 30"),
])
def test_degrade_bad_input_is_one_line(hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                       extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        data_main(["degrade", f"input={hr_dir}", f"output={tmp_path / 'LR'}", *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "LR").exists()


def test_degrade_needs_input_and_output(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        data_main(["degrade", "degradation=bd"])
    err = capsys.readouterr().err
    assert "needs input=<folder of HR images> and output=<folder for the LR images>" in err


def test_eval_under_a_degradation(hr_dir: Path, tmp_path: Path) -> None:
    """LR images from <Set>/LR_bd/X3/ where present (here: one from pspl-data degrade, one altered), else
    made from HR and kept in the run folder; the degradation is recorded in results.json."""
    bench = tmp_path / "bench"
    for name in ("chelsea", "coffee"):
        write_png(bench / "Set5" / "HR" / f"{name}.png", read_image(hr_dir / f"{name}.png"))
    torch.manual_seed(0)
    weights = _weights(tmp_path / "x3.pth", 3)

    def run(folder: str, *overrides: str) -> tuple[dict, Path]:
        base = [f"ckpt={weights}", f"benchmark_root={bench}", "device=cpu", "sets=[Set5]"]
        cfg = compose_config("eval", [*base, *overrides], tmp_path / folder)
        evaluate(cfg, _quiet())
        out = Path(cfg.paths.output_dir)
        return json.loads((out / "results.json").read_text()), out

    made, out = run("made", "degradation=bd")
    assert made["degradation"] == {"x3": {"degradation": "bd", "scale": 3, "seed": 0, "kernel_size": 7,
                                          "sigma": 1.6}}
    for name in ("chelsea", "coffee"):
        np.testing.assert_array_equal(read_image(out / "lr" / "Set5" / "x3" / f"{name}.png"),
                                      degrade_image(BlurDown(3), read_image(hr_dir / f"{name}.png"), name))
    bicubic, _ = run("bicubic")
    assert bicubic["degradation"]["x3"]["degradation"] == "bicubic"
    assert bicubic["images"][0]["psnr_y"] != pytest.approx(made["images"][0]["psnr_y"], abs=1e-6)

    lr_dir = bench / "Set5" / "LR_bd" / "X3"
    data_main(["degrade", f"input={bench / 'Set5' / 'HR'}", f"output={lr_dir}", "degradation=bd",
               "data.scale=3"])
    write_png(lr_dir / "coffee.png", read_image(lr_dir / "coffee.png") // 2)  # a stored LR that differs
    stored, out = run("stored", "degradation=bd")
    scores = {r["image"]: r["psnr_y"] for r in stored["images"]}
    expect = {r["image"]: r["psnr_y"] for r in made["images"]}
    assert scores["chelsea"] == pytest.approx(expect["chelsea"], abs=1e-9)  # the same LR, read from LR_bd
    assert scores["coffee"] != pytest.approx(expect["coffee"], abs=1e-6)  # the stored file was used
    assert not (out / "lr").exists()


def test_eval_refuses_a_bad_degradation_before_any_image(hr_dir: Path, tmp_path: Path) -> None:
    weights = _weights(tmp_path / "x2.pth", 2)
    write_png(tmp_path / "bench" / "Set5" / "HR" / "a.png", read_image(hr_dir / "coffee.png"))
    cfg = compose_config("eval", [f"ckpt={weights}", f"benchmark_root={tmp_path / 'bench'}", "sets=[Set5]",
                                  "degradation=realistic", "degradation.stage1.kernel_size=[8,21]"], tmp_path)
    with pytest.raises(ConfigError, match=r"degradation.stage1.kernel_size=8 is not allowed"):
        evaluate(cfg, _quiet())
    assert not (tmp_path / "run" / "lr").exists()


def test_bench_reports_on_device_synthesis(capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_data", Path(__file__).parents[1] / "scripts" /
                                                  "bench_data.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--synthesis-only", "--seconds", "0.05", "--patch", "48", "--batch", "4"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = {"bicubic", "bd", "dn", "realistic"}
    assert set(report["synthesis_batches_per_s"]["cpu"]) == names == set(report["synthesis_draw_ms"])
    assert all(v > 0 for v in report["synthesis_batches_per_s"]["cpu"].values())
    assert all(v > 0 for v in report["synthesis_draw_ms"].values())
    # what a draw row times, without comparing times (a busy machine reorders them): BD draws nothing
    assert BlurDown(2).draw(torch.arange(4), (48, 48)) == {}
    assert NoisyBicubic(2).draw(torch.arange(4), (48, 48))["noise"].shape == (4, 3, 24, 24)
    assert ("cuda" in report["synthesis_batches_per_s"]) == torch.cuda.is_available()
