"""``pspl-train degradation=...`` end to end: training, the image panel, exact resume, bad configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from PIL import Image

from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError
from tests.conftest import TINY, compose_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _cfg(root: Path, sample_root: Path, *overrides: str):
    return compose_config("train", [*TINY, f"data.root={sample_root}", *overrides], root)


def _first_batch(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The (lr, hr) of a run's first training batch, rebuilt outside the run from its data config."""
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return dm.on_after_batch_transfer(dm.on_before_batch_transfer(batch, 0), 0)


@pytest.mark.parametrize(("name", "scale", "extra"), [
    ("bd", 3, ["data.patch_size=48"]), ("dn", 3, ["data.patch_size=48"]), ("realistic", 4, []),
])
def test_training_under_a_degradation(sample_root: Path, tmp_path: Path, name: str, scale: int,
                                      extra: list[str]) -> None:
    panels = tmp_path / "panels"
    cfg = _cfg(tmp_path, sample_root, f"degradation={name}", f"data.scale={scale}", *extra,
               "trainer.max_steps=3", "callbacks.image_panel.every_n_steps=1",
               f"callbacks.image_panel.save_dir={panels}")
    metrics = train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["global_step"] == 3 and saved["val/psnr_y"] == metrics["val/psnr_y"]
    for key in ("val/psnr_y", "val/ssim_y", "val/sample/psnr_y"):
        assert math.isfinite(saved[key]), key
    assert 5 < saved["val/psnr_y"] < 50 and 0 < saved["val/ssim_y"] <= 1

    # the panel of step 1 shows batch 0: its degraded LR (nearest-upscaled) and its HR
    lr, hr = _first_batch(cfg)
    patch = hr.shape[-1]
    assert lr.shape == (4, 3, patch // scale, patch // scale) and lr.dtype == torch.uint8
    panel = np.asarray(Image.open(panels / "panel_step0000001.png"))
    for i in range(lr.shape[0]):
        up = lr[i].repeat_interleave(scale, -2).repeat_interleave(scale, -1).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(panel[i * patch:(i + 1) * patch, :patch], up)
        np.testing.assert_array_equal(panel[i * patch:(i + 1) * patch, 2 * patch:3 * patch],
                                      hr[i].permute(1, 2, 0).numpy())


def _net_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {k: v for k, v in state["state_dict"].items() if k.startswith("net.")}


@pytest.mark.parametrize("name", ["dn", pytest.param("realistic", marks=pytest.mark.slow)])
def test_resume_under_a_synthetic_degradation_is_exact(sample_root: Path, tmp_path: Path, name: str) -> None:
    """6 steps straight == 2 + resume + 4 (mid-epoch: 3 batches per epoch), with per-sample noise (dn) and
    the realistic pipeline's per-sample and per-batch randomness."""
    common = [f"degradation={name}", "data.repeat=2", "trainer.max_steps=6", "trainer.val_check_interval=6",
              "optimizer.lr=1e-3", "loss.step_unit=4"]
    straight = _cfg(tmp_path / "a", sample_root, *common)
    train(straight)
    first = _cfg(tmp_path / "b", sample_root, *common, "+callbacks.stop._target_=tests.helpers.probes.StopAt",
                 "+callbacks.stop.step=2")
    assert train(first)["global_step"] == 2
    run_b = Path(first.paths.output_dir)
    assert train(_cfg(tmp_path / "c", sample_root, *common, f"resume={run_b}"))["global_step"] == 6
    a = _net_weights(Path(straight.paths.output_dir) / "checkpoints" / "last.ckpt")
    b = _net_weights(run_b / "checkpoints" / "last.ckpt")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize(("overrides", "message"), [
    (["degradation=bd", "degradation.kernel_size=6"], "degradation.kernel_size=6 is not allowed"),
    (["degradation=realistic", "degradation.stage2.noise_sigma=[30,1]"], "min 30 > max 1"),
    (["degradation=dn", "data.scale=5", "data.patch_size=40"], "degradation=dn supports data.scale 2, 3, 4"),
])
def test_bad_degradation_config_fails_before_training(sample_root: Path, tmp_path: Path,
                                                      overrides: list[str], message: str) -> None:
    cfg = _cfg(tmp_path, sample_root, *overrides)
    with pytest.raises(Exception) as exc:
        train(cfg)
    error = exc.value if isinstance(exc.value, ConfigError) else exc.value.__cause__  # Hydra wraps it
    assert isinstance(error, ConfigError) and message in str(error)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_unknown_degradation_lists_the_options(sample_root: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingConfigException, match=r"Could not find 'degradation/gaussian'") as exc:
        _cfg(tmp_path, sample_root, "degradation=gaussian")
    assert all(name in str(exc.value) for name in ("bd", "bicubic", "dn", "realistic"))
