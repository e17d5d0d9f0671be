"""Experiment presets (the paper's runs) compose with the recipe's values and train; EMA validates with the
averaged weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from pspl_lightning.cli.checks import check_train_config
from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError

try:
    from tests.conftest import compose_config
except ImportError:  # pytest put tests/ itself on sys.path
    from conftest import compose_config

EXPERIMENTS = Path(config_dir()) / "experiment"
# The DIV2K data config is the presets' own; the sample set stands in while it does not exist.
DATA = "div2k" if (Path(config_dir()) / "data" / "div2k.yaml").is_file() else "sample"
DATA_TARGET = {"div2k": "pspl_lightning.data.DIV2KDataModule",
               "sample": "pspl_lightning.data.SampleDataModule"}
NETWORKS = {"edsr_baseline": "pspl_lightning.archs.EDSR", "rcan": "pspl_lightning.archs.RCAN"}
LOSSES = {"pspl": "pspl_lightning.losses.PSPLLoss", "l1": "torch.nn.L1Loss"}
PRESETS = [f"{net}_x{s}_{loss}" for net in NETWORKS for s in (2, 3, 4) for loss in LOSSES]


def test_the_preset_set() -> None:
    assert sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.parametrize("scale", [3, 4])
def test_a_preset_at_another_scale_keeps_the_recipes_lr_patch(scale: int, tmp_path: Path) -> None:
    """experiment=<x2 preset> data.scale=s trains on LR patches of 48 (HR 48 x s), as the recipe says."""
    overrides = ["experiment=edsr_baseline_x2_pspl", f"data.scale={scale}"]
    cfg = compose_config("train", overrides + ([] if DATA == "div2k" else ["data=sample"]), tmp_path)
    assert cfg.data.patch_size // cfg.data.scale == 48 and cfg.model.scale == scale


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_the_recipe(name: str, tmp_path: Path) -> None:
    net, scale_tag, loss = name.rsplit("_", 2)
    scale = int(scale_tag[1:])
    overrides = [f"experiment={name}"] + ([] if DATA == "div2k" else ["data=sample"])
    cfg = compose_config("train", overrides, tmp_path)
    assert cfg.model._target_ == NETWORKS[net]
    assert cfg.loss._target_ == LOSSES[loss]
    assert cfg.data._target_ == DATA_TARGET[DATA]
    assert (cfg.data.scale, cfg.model.scale) == (scale, scale)
    assert cfg.data.patch_size == 48 * scale and cfg.data.batch_size == 16
    assert cfg.trainer.max_steps == 300_000 and cfg.trainer.val_check_interval == 1000
    assert list(cfg.schedule.lr_milestones) == [200_000] and cfg.schedule.lr_gamma == 0.5
    assert cfg.optimizer.lr == 1e-4 and list(cfg.optimizer.betas) == [0.9, 0.999]
    if loss == "pspl":
        pace = (cfg.loss.alpha, cfg.loss.beta, cfg.loss.max_weight, cfg.loss.step_unit)
        assert pace == (1.0, 0.0, 2.0, 1000)
        assert cfg.loss.ssim_mode == "official"
    assert cfg.run_name == name
    assert "init_from" not in cfg.model  # a top-level key, beside ckpt_path and resume
    if scale == 2:
        assert cfg.init_from is None
    else:  # x3/x4 start from the x2 weights: the key must be given (or set to null on purpose)
        assert OmegaConf.is_missing(cfg, "x2_weights")  # Hydra's ???, read through init_from
        with pytest.raises(ConfigError, match=r"^init_from is required by this experiment: set "
                                              r"init_from=<x2 run folder>/checkpoints/last.ckpt"):
            check_train_config(cfg)
        given = compose_config("train", [*overrides, "init_from=/runs/x2/last.ckpt"], tmp_path)
        assert given.init_from == "/runs/x2/last.ckpt"


def test_preset_trains(train_cfg: Callable[..., DictConfig]) -> None:
    """The x2 PSPL preset end to end on the sample set, at toy size."""
    cfg = train_cfg("experiment=edsr_baseline_x2_pspl", "data=sample", "trainer.max_steps=2",
                    "trainer.val_check_interval=2", "schedule.lr_milestones=[]")
    assert cfg.loss.step_unit == 1000 and cfg.data.batch_size == 4
    metrics = train(cfg)
    assert metrics["val/psnr_y"] > 10.0
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert written["global_step"] == 2


class WeightRecorder(Callback):
    """Saves the network's weights after every training step, at the start of every training step and as
    the first validation batch sees them."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def _save(self, pl_module: L.LightningModule, name: str) -> None:
        state = {k: v.detach().clone().double() for k, v in pl_module.net.state_dict().items()}
        torch.save(state, self.out_dir / f"{name}.pt")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._save(pl_module, f"before_{trainer.global_step}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._save(pl_module, f"after_{trainer.global_step}")

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self._save(pl_module, f"val_{trainer.global_step}")


def test_ema_validates_with_the_averaged_weights(train_cfg: Callable[..., DictConfig],
                                                  tmp_path: Path) -> None:
    # L1: PSPL's first weights (sigma 0.1 at step 0 on the sample schedule) are ~0, the weights would not move
    decay, rec = 0.5, tmp_path / "weights"
    cfg = train_cfg("loss=l1", "callbacks=ema", f"callbacks.ema.decay={decay}", "trainer.max_steps=4",
                    "trainer.val_check_interval=2", "schedule.lr_milestones=[]",
                    f"+callbacks.recorder._target_={WeightRecorder.__module__}.WeightRecorder",
                    f"+callbacks.recorder.out_dir={rec}")
    metrics = train(cfg)

    def load(name: str) -> dict[str, torch.Tensor]:
        return torch.load(rec / f"{name}.pt", weights_only=True)

    raw = {step: load(f"after_{step}") for step in range(1, 5)}
    ema = dict(raw[1])  # the first update copies, then ema = decay * ema + (1 - decay) * weights
    expected = {}
    for step in range(2, 5):
        ema = {k: decay * ema[k] + (1 - decay) * raw[step][k] for k in ema}
        expected[step] = ema
    for step in (2, 4):
        seen = load(f"val_{step}")
        assert max((seen[k] - raw[step][k]).abs().max().item() for k in seen) > 1e-5  # not the raw weights
        for key in seen:
            torch.testing.assert_close(seen[key], expected[step][key], rtol=0, atol=1e-6)
    # training goes on from the raw weights, not from the average
    for key, value in load("before_2").items():
        torch.testing.assert_close(value, raw[2][key], rtol=0, atol=0)

    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in expected[4].items():
        torch.testing.assert_close(ckpt["state_dict"][f"net.{key}"].double(), value, rtol=0, atol=1e-6)
        torch.testing.assert_close(ckpt["current_model_state"][f"net.{key}"].double(), raw[4][key],
                                   rtol=0, atol=0)
    assert metrics["val/psnr_y"] == pytest.approx(json.loads(
        (Path(cfg.paths.output_dir) / "metrics.json").read_text())["val/psnr_y"])


def test_debug_fast_smoke_tests_a_preset(tmp_path: Path) -> None:
    """debug=fast is the way to try a preset; max_steps alone is refused by the recipe's milestone."""
    base = ["experiment=edsr_baseline_x2_pspl", "data=sample"]
    check_train_config(compose_config("train", [*base, "debug=fast"], tmp_path))
    with pytest.raises(ConfigError, match=r"lr_milestones \[200000\] .* \(to smoke-test a preset: "
                                          r"debug=fast\)"):
        check_train_config(compose_config("train", [*base, "trainer.max_steps=3"], tmp_path))
