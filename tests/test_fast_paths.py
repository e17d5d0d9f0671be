"""GPU fast paths, checked on CPU: each option runs through the real training config, and mixed precision
leaves the PSPL weights and the loss reduction in float32 (the SSIM moments in float64)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from skimage import data as skdata

from pspl_lightning.cli.build import build_module
from pspl_lightning.cli.train import train
from pspl_lightning.fast_paths import prepare_network
from pspl_lightning.imresize import imresize
from pspl_lightning.losses import PSPLLoss


def _finite_metrics(metrics: dict[str, float]) -> None:
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    assert 5 < metrics["val/psnr_y"] < 60


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_training_runs_with_precision(train_cfg, precision: str) -> None:
    cfg = train_cfg(f"trainer.precision={precision}", "trainer.max_steps=3", "trainer.val_check_interval=3")
    _finite_metrics(train(cfg))


def test_training_runs_with_channels_last(train_cfg) -> None:
    cfg = train_cfg("fast.channels_last=true", "trainer.max_steps=3", "trainer.val_check_interval=3")
    net = build_module(cfg).net
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    _finite_metrics(train(cfg))


def test_training_runs_with_cudnn_benchmark_and_pinned_memory(train_cfg) -> None:
    before = torch.backends.cudnn.benchmark
    try:
        cfg = train_cfg("trainer.benchmark=true", "data.pin_memory=true", "trainer.max_steps=3",
                        "trainer.val_check_interval=3")
        _finite_metrics(train(cfg))
        assert torch.backends.cudnn.benchmark is True  # Lightning applied trainer.benchmark
    finally:
        torch.backends.cudnn.benchmark = before


def test_compile_wraps_the_network_and_keeps_its_outputs() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    compiled = prepare_network(net, compile=True)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled._orig_mod is net
    assert prepare_network(net) is net


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler")
def test_training_runs_with_compile(train_cfg) -> None:
    cfg = train_cfg("fast.compile=true", "trainer.max_steps=2", "trainer.val_check_interval=2")
    _finite_metrics(train(cfg))


def _photo_pair() -> tuple[torch.Tensor, torch.Tensor]:
    hr = skdata.astronaut()[:96, 150:246]
    sr = imresize(imresize(hr.astype(np.float64) / 255.0, 0.5), 2.0)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()  # noqa: E731
    return to_t(hr / 255.0), to_t(sr)


@pytest.mark.parametrize("mode", ["official", "normalized"])
def test_weights_ignore_autocast(mode: str) -> None:
    """Inside bf16 autocast the weights of the same inputs are bit-identical to float32 ones."""
    hr, sr = _photo_pair()
    loss = PSPLLoss(ssim_mode=mode)
    plain = loss.weight_map(sr, hr, 0.7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss.weight_map(sr, hr, 0.7)
        value = loss(sr.bfloat16(), hr, sigma=0.7)
    assert mixed.dtype == torch.float32 and value.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=0)


@pytest.mark.parametrize(("mode", "max_mean_diff"), [("official", 0.004), ("normalized", 2e-4)])
def test_bf16_network_output_gives_close_weights(mode: str, max_mean_diff: float) -> None:
    """A bf16 SR output (what a bf16-mixed network returns) changes the weights only by its rounding."""
    hr, sr = _photo_pair()
    loss = PSPLLoss(ssim_mode=mode)
    w32 = loss.weight_map(sr, hr, 0.7)
    w16 = loss.weight_map(sr.bfloat16(), hr, 0.7)
    diff = (w16 - w32).abs()
    assert diff.mean().item() < max_mean_diff
    assert torch.quantile(diff.flatten(), 0.9).item() < 5 * max_mean_diff
    l32, l16 = loss(sr, hr, sigma=0.7), loss(sr.bfloat16(), hr, sigma=0.7)
    assert l16.dtype == torch.float32
    assert l16.item() == pytest.approx(l32.item(), rel=0.02)


def test_compile_is_skipped_where_unsupported(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    net = torch.nn.Conv2d(3, 3, 1)
    with caplog.at_level("WARNING", logger="pspl_lightning.fast_paths"):
        assert prepare_network(net, compile=True) is net
    assert "fast.compile=true ignored" in caplog.text
