"""pspl-upscale: images or folders -> 8-bit PNGs with the same names; never overwrites unless asked."""

from __future__ import annotations

import os
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

from pspl_lightning.archs import EDSR
from pspl_lightning.cli.train import train
from pspl_lightning.cli.upscale import plan_outputs, upscale
from pspl_lightning.data.io import read_image
from pspl_lightning.export import export_model
from pspl_lightning.inference import WeightsError
from tests.helpers.checkpoints import network_from_checkpoint

try:
    from tests.conftest import TINY, compose_config
except ImportError:  # tests/ without __init__.py: pytest puts tests/ itself on sys.path
    from conftest import TINY, compose_config


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> Path:
    """last.ckpt of a tiny EDSR x2 trained 6 steps on the sample set; built once per file."""
    out = tmp_path_factory.mktemp("train")
    cfg = compose_config("train", [*TINY, f"data.root={sample_root}"], out)
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with a PNG, a JPEG and a grayscale PNG, and a text file that is not an image."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(skdata.chelsea()[:70, :90]).save(folder / "cat.png")
    Image.fromarray(skdata.coffee()[:50, :64]).save(folder / "cup.jpg", quality=90)
    Image.fromarray(skdata.camera()[:40, :44]).save(folder / "gray.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    return compose_config("upscale", ["device=cpu", *overrides], tmp_path)


def _reference_sr(ckpt: Path, img: np.ndarray) -> np.ndarray:
    """The checkpoint's network rebuilt by hand, whole image at once, rounded to 8 bit."""
    net = network_from_checkpoint(ckpt, EDSR(2, n_resblocks=1, n_feats=8))
    with torch.no_grad():
        sr = net(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255)[0]
    return sr.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def test_upscale_folder_tiled(tmp_path: Path, ckpt: Path, photos: Path) -> None:
    out = tmp_path / "out"
    written = upscale(_cfg(tmp_path, f"ckpt={ckpt}", f"input={photos}", f"output={out}", "tile=16"),
                      console=Console(quiet=True))
    assert sorted(p.name for p in written) == ["cat.png", "cup.png", "gray.png"]
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "cup.png", "gray.png"]  # no temp files left
    for name, src in (("cat", "cat.png"), ("cup", "cup.jpg"), ("gray", "gray.png")):
        with Image.open(out / f"{name}.png") as im:
            assert im.mode == "RGB" and im.format == "PNG"
        sr, lr = read_image(out / f"{name}.png"), read_image(photos / src)
        assert sr.dtype == np.uint8 and sr.shape == (lr.shape[0] * 2, lr.shape[1] * 2, 3)
        # tiles of 16 with the automatic overlap give the untiled result (a rounding flip at most)
        assert np.abs(sr.astype(int) - _reference_sr(ckpt, lr).astype(int)).max() <= 1


def test_existing_outputs_are_kept_unless_overwrite(tmp_path: Path, ckpt: Path, photos: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "cup.png").write_bytes(b"mine")
    cfg = _cfg(tmp_path, f"ckpt={ckpt}", f"input={photos}", f"output={out}")
    with pytest.raises(FileExistsError, match=r"1 output file\(s\) exist: .*cup.png; nothing was written"):
        upscale(cfg, console=Console(quiet=True))
    assert sorted(p.name for p in out.iterdir()) == ["cup.png"] and (out / "cup.png").read_bytes() == b"mine"
    cfg = _cfg(tmp_path, f"ckpt={ckpt}", f"input={photos}", f"output={out}", "overwrite=true")
    upscale(cfg, console=Console(quiet=True))
    assert read_image(out / "cup.png").shape == (100, 128, 3)


def test_single_file_and_exported_weights(tmp_path: Path, ckpt: Path, photos: Path) -> None:
    weights = export_model(ckpt, tmp_path / "edsr.pth").output
    out = tmp_path / "single"
    written = upscale(_cfg(tmp_path, f"ckpt={weights}", f"input={photos / 'cat.png'}", f"output={out}",
                           "tile=null", "self_ensemble=true"), console=Console(quiet=True))
    assert written == [out / "cat.png"]
    assert read_image(out / "cat.png").shape == (140, 180, 3)


def test_bad_requests_are_refused(tmp_path: Path, ckpt: Path, photos: Path) -> None:
    with pytest.raises(FileNotFoundError, match="input=.*nowhere does not exist"):
        plan_outputs(tmp_path / "nowhere", tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="folder without images"):
        plan_outputs(empty, tmp_path / "out")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="output=.*file.png is a file"):
        plan_outputs(photos, tmp_path / "file.png")
    Image.fromarray(skdata.chelsea()[:20, :20]).save(photos / "cat.bmp")
    with pytest.raises(ValueError, match="cat.bmp and cat.png would both be written to"):
        plan_outputs(photos, tmp_path / "out")
    with pytest.raises(WeightsError, match=r"is a x2 model .* but scale 4 was asked"):
        upscale(_cfg(tmp_path, f"ckpt={ckpt}", f"input={photos / 'cat.png'}", f"output={tmp_path / 'o'}",
                     "scale=4"), console=Console(quiet=True))
    assert not (tmp_path / "o").exists()


def test_pspl_upscale_console_script(tmp_path: Path, ckpt: Path, photos: Path) -> None:
    exe = Path(sys.executable).with_name("pspl-upscale")
    out = tmp_path / "cli_out"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    args = [f"ckpt={ckpt}", f"input={photos}", f"output={out}", "tile=32", "device=cpu",
            f"hydra.run.dir={tmp_path / 'log'}"]
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "cup.png", "gray.png"]
    assert "Wrote 3 PNG(s)" in proc.stdout + proc.stderr
