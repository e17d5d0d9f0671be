"""pspl-eval end to end: a model trained on the sample set, evaluated on benchmark folders made here."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pspl_lightning.archs import EDSR
from pspl_lightning.cli.eval import evaluate, main
from pspl_lightning.cli.train import train
from pspl_lightning.data.io import read_image, write_png
from pspl_lightning.imresize import make_lr
from pspl_lightning.inference import WeightsError
from pspl_lightning.inference.loading import FORMAT
from tests.helpers.checkpoints import network_from_checkpoint

try:
    from tests.conftest import TINY, compose_config
except ImportError:  # tests/ without __init__.py: pytest puts tests/ itself on sys.path
    from conftest import TINY, compose_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> tuple[Path, dict]:
    """(last.ckpt, metrics.json) of a tiny EDSR x2 trained 6 steps on the sample set; built once per file."""
    out = tmp_path_factory.mktemp("train")
    cfg = compose_config("train", [*TINY, f"data.root={sample_root}"], out)
    train(cfg)
    run = Path(cfg.paths.output_dir)
    return run / "checkpoints" / "last.ckpt", json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> Path:
    """Three benchmark folders in the three accepted layouts, with odd sizes (modcrop) and a stored LR."""
    root = tmp_path_factory.mktemp("benchmarks")
    (root / "Set5" / "HR").mkdir(parents=True)
    for name in ("chelsea", "coffee"):  # Set5/HR/: the sample set's validation photos, LR made on the fly
        shutil.copy(sample_root / "val" / "HR" / f"{name}.png", root / "Set5" / "HR" / f"{name}.png")
    write_png(root / "set14" / "astronaut.png", skdata.astronaut()[40:137, 180:263])  # images directly, 83x97
    write_png(root / "set14" / "rocket.png", skdata.rocket()[100:164, 200:290])
    hr = skdata.coffee()[150:215, 300:371]  # 71x65: modcropped to 70x64 against the stored 35x32 LR
    write_png(root / "BSD100" / "HR" / "cup.png", hr)
    stored_lr = np.asarray(Image.fromarray(hr[:64, :70]).resize((35, 32), Image.BICUBIC))  # PIL: not make_lr
    write_png(root / "BSD100" / "LR_bicubic" / "X2" / "cupx2.png", stored_lr)
    return root


def _eval_cfg(tmp_path: Path, ckpt: Path | str, bench: Path, *overrides: str) -> DictConfig:
    base = [f"ckpt={ckpt}", f"benchmark_root={bench}", "device=cpu"]
    return compose_config("eval", [*base, *overrides], tmp_path)


def _tiny_net(ckpt: Path) -> EDSR:
    """The checkpoint's network rebuilt by hand (independent of pspl_lightning.inference)."""
    return network_from_checkpoint(ckpt, EDSR(2, n_resblocks=1, n_feats=8))


def _scores(sr8: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """PSNR/SSIM on Y with numpy + scikit-image: 8-bit SR, HR modcropped to it, border = scale."""
    hr = hr[: sr8.shape[0], : sr8.shape[1]]

    def y(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64) / 255
        luma = 16 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]
        return luma[scale:-scale, scale:-scale]

    return (peak_signal_noise_ratio(y(hr), y(sr8), data_range=255),
            structural_similarity(y(hr), y(sr8), gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=255))


def _to_8bit(sr: torch.Tensor) -> np.ndarray:
    return sr[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def _reference(net: torch.nn.Module, lr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    with torch.no_grad():
        sr = net(torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255)
    return _scores(_to_8bit(sr), hr, scale)


def _rows(run: Path) -> dict[tuple[str, str], dict]:
    with open(run / "results.csv") as f:
        return {(r["set"], r["image"]): r for r in csv.DictReader(f)}


def test_eval_end_to_end(tmp_path: Path, trained: tuple[Path, dict], bench: Path) -> None:
    ckpt, train_metrics = trained
    console = Console(record=True, width=140)
    summary = evaluate(_eval_cfg(tmp_path, ckpt, bench, "sets=[Set5,Set14,B100]"), console=console)
    run = tmp_path / "run"

    assert [(s.set, s.scale, s.images) for s in summary] == [("Set5", 2, 2), ("set14", 2, 2),
                                                             ("BSD100", 2, 1)]
    # Set5 holds the sample set's validation photos: the same number as pspl-train's final validation
    assert summary[0].psnr_y == pytest.approx(train_metrics["val/sample/psnr_y"], abs=1e-6)
    assert summary[0].ssim_y == pytest.approx(train_metrics["val/sample/ssim_y"], abs=1e-7)

    net, rows = _tiny_net(ckpt), _rows(run)
    assert len(rows) == 5
    cases = [("Set5", n, read_image(bench / "Set5" / "HR" / f"{n}.png"), None) for n in ("chelsea", "coffee")]
    cases += [("set14", n, read_image(bench / "set14" / f"{n}.png"), None) for n in ("astronaut", "rocket")]
    cases += [("BSD100", "cup", read_image(bench / "BSD100" / "HR" / "cup.png"),
               read_image(bench / "BSD100" / "LR_bicubic" / "X2" / "cupx2.png"))]
    for set_name, image, hr, lr in cases:
        ref_psnr, ref_ssim = _reference(net, make_lr(hr, 2) if lr is None else lr, hr, 2)
        row = rows[(set_name, image)]
        assert row["scale"] == "2"
        assert float(row["psnr_y"]) == pytest.approx(ref_psnr, abs=1e-4)
        assert float(row["ssim_y"]) == pytest.approx(ref_ssim, abs=1e-5)

    payload = json.loads((run / "results.json").read_text())
    assert payload["checkpoints"]["x2"] == {"path": str(ckpt), "network": "EDSR(n_feats=8, n_resblocks=1, "
                                                                          "res_scale=1.0) x2"}
    assert [s["set"] for s in payload["sets"]] == ["Set5", "set14", "BSD100"]
    assert len(payload["images"]) == 5 and payload["self_ensemble"] is False
    assert payload["sets"][2]["psnr_y"] == pytest.approx(float(rows[("BSD100", "cup")]["psnr_y"]), abs=1e-6)

    text = console.export_text()
    for s in summary:
        assert f"{s.psnr_y:.2f}" in text and f"{s.ssim_y:.4f}" in text and s.set in text
    assert "EDSR(n_feats=8, n_resblocks=1, res_scale=1.0) x2" in text and "results.csv" in text


def test_eval_tiled_and_self_ensemble(tmp_path: Path, trained: tuple[Path, dict], bench: Path) -> None:
    ckpt, _ = trained
    quiet = Console(quiet=True)
    plain = evaluate(_eval_cfg(tmp_path / "plain", ckpt, bench, "sets=[Set14,B100]"), console=quiet)
    tiled = evaluate(_eval_cfg(tmp_path / "tiled", ckpt, bench, "sets=[Set14,B100]", "tile=16"),
                     console=quiet)
    for a, b in zip(plain, tiled, strict=True):
        assert b.psnr_y == pytest.approx(a.psnr_y, abs=1e-4) and b.ssim_y == pytest.approx(a.ssim_y, abs=1e-6)
    payload = json.loads((tmp_path / "tiled" / "run" / "results.json").read_text())
    assert payload["tile"] == 16 and payload["tile_overlap"] is None

    plus = evaluate(_eval_cfg(tmp_path / "plus", ckpt, bench, "sets=[Set14]", "self_ensemble=true", "tile=24",
                              "save_images=true"), console=quiet)
    net = _tiny_net(ckpt)
    hr = read_image(bench / "set14" / "rocket.png")
    lr = torch.from_numpy(make_lr(hr, 2).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():  # the x8 ensemble written out independently: 4 rotations x mirror
        outs = []
        for k in range(4):
            for mirror in (False, True):
                x = torch.rot90(lr.flip(-1) if mirror else lr, k, dims=(-2, -1))
                y = torch.rot90(net(x), -k, dims=(-2, -1))
                outs.append(y.flip(-1) if mirror else y)
    sr = _to_8bit(torch.stack(outs).mean(0))
    saved = read_image(tmp_path / "plus" / "run" / "images" / "set14" / "x2" / "rocket.png")
    assert saved.shape == sr.shape == (64, 90, 3)
    assert np.abs(saved.astype(int) - sr.astype(int)).max() <= 1  # float rounding may flip a level
    ref_psnr, ref_ssim = _scores(sr, hr, 2)
    row = _rows(tmp_path / "plus" / "run")[("set14", "rocket")]
    assert float(row["psnr_y"]) == pytest.approx(ref_psnr, abs=1e-3)
    assert float(row["ssim_y"]) == pytest.approx(ref_ssim, abs=1e-4)
    assert abs(plus[0].psnr_y - plain[0].psnr_y) > 1e-3  # the ensemble changes the result


def test_eval_several_scales(tmp_path: Path, trained: tuple[Path, dict], bench: Path) -> None:
    ckpt, _ = trained
    torch.manual_seed(1)
    x3 = tmp_path / "x3.pth"
    model = {"_target_": "pspl_lightning.archs.EDSR", "scale": 3, "n_resblocks": 1, "n_feats": 8,
             "res_scale": 1.0}
    torch.save({"format": FORMAT, "model": model, "scale": 3, "state_dict": EDSR(3, 1, 8).state_dict()}, x3)
    console = Console(record=True, width=140)
    summary = evaluate(_eval_cfg(tmp_path, f"[{ckpt},{x3}]", bench, "sets=[Set5]", "scales=[3,2]"), console)
    assert [(s.set, s.scale, s.images) for s in summary] == [("Set5", 3, 2), ("Set5", 2, 2)]
    with open(tmp_path / "run" / "results.csv") as f:
        assert sorted((r["scale"], r["image"]) for r in csv.DictReader(f)) == [
            ("2", "chelsea"), ("2", "coffee"), ("3", "chelsea"), ("3", "coffee")]
    assert "x3" in console.export_text()


TINY_NET = r"EDSR\(n_feats=8, n_resblocks=1, res_scale=1.0\) x2"


@pytest.mark.parametrize(("overrides", "error", "message"), [
    (["scales=[3]"], WeightsError, rf"last.ckpt is a x2 model \({TINY_NET}\), but scale 3 was asked"),
    (["model=edsr_baseline"], WeightsError,
     rf"holds {TINY_NET}, but the network asked for is EDSR\(n_feats=64, n_resblocks=16, res_scale=1.0\)"),
    (["sets=[Urban100]"], FileNotFoundError, r"benchmark set 'Urban100' not found under .*expected"),
    (["sets=[]"], ValueError, "sets is empty"),
])
def test_eval_refuses_what_does_not_match(tmp_path: Path, trained: tuple[Path, dict], bench: Path,
                                          overrides: list[str], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        evaluate(_eval_cfg(tmp_path, trained[0], bench, *overrides), console=Console(quiet=True))
    assert not (tmp_path / "run" / "results.csv").exists()


def test_pspl_eval_console_script(tmp_path: Path, trained: tuple[Path, dict], bench: Path) -> None:
    exe = Path(sys.executable).with_name("pspl-eval")
    run = tmp_path / "cli_run"
    env = {**os.environ, "WANDB_MODE": "disabled", "COLUMNS": "140"}
    proc = subprocess.run([str(exe), f"ckpt={trained[0]}", f"benchmark_root={bench}", "sets=[Set5,B100]",
                           "device=cpu", f"hydra.run.dir={run}"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "PSNR-Y (dB)" in proc.stdout and "Set5" in proc.stdout and "BSD100" in proc.stdout
    assert len(_rows(run)) == 3 and (run / "results.json").is_file()


def test_pspl_eval_exits_with_status_2_and_the_reason(tmp_path: Path, trained: tuple[Path, dict], bench: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # in-process, with Hydra's logging setup off so that the test session's logging stays as it is
    monkeypatch.setattr(sys, "argv", ["pspl-eval", f"ckpt={trained[0]}", f"benchmark_root={bench}",
                                      "scales=[4]", f"hydra.run.dir={tmp_path / 'bad'}",
                                      "hydra/job_logging=none", "hydra/hydra_logging=none"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err  # the one line of every entry point's failure path
    assert "but scale 4 was asked" in err and len(err.strip().splitlines()) == 1
