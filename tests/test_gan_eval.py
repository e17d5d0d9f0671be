"""pspl-eval's LPIPS option: one line and PSNR/SSIM as usual without its weights; with a scorer, every image
scored on the same 8-bit SR as PSNR/SSIM and the means written to results.json."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from pspl_lightning.archs import TinySR
from pspl_lightning.cli import eval as eval_cli
from pspl_lightning.data.io import read_image
from pspl_lightning.errors import ConfigError
from pspl_lightning.inference.loading import FORMAT
from pspl_lightning.inference.lpips import lpips_weights_missing
from tests.conftest import compose_config


@pytest.fixture
def setup(tmp_path: Path, sample_root: Path) -> tuple[Path, Path]:
    """(a pspl-export file of a TinySR x2, a benchmark root with Set5 = the sample set's two val photos)."""
    torch.manual_seed(0)
    model = {"_target_": "pspl_lightning.archs.TinySR", "n_feats": 8, "n_layers": 1}
    weights = tmp_path / "tiny.pth"
    torch.save({"format": FORMAT, "state_dict": TinySR(2, n_feats=8, n_layers=1).state_dict(), "model": model,
                "scale": 2, "metadata": {}}, weights)
    (tmp_path / "bench" / "Set5" / "HR").mkdir(parents=True)
    for name in ("chelsea", "coffee"):
        shutil.copy(sample_root / "val" / "HR" / f"{name}.png", tmp_path / "bench" / "Set5" / "HR")
    return weights, tmp_path / "bench"


def _cfg(tmp_path: Path, weights: Path, bench: Path, *overrides: str):
    return compose_config("eval", [f"ckpt={weights}", f"benchmark_root={bench}", "device=cpu", "sets=[Set5]",
                                   "metrics.lpips=true", *overrides], tmp_path)


def test_lpips_without_its_weights_says_so_in_one_line(setup: tuple[Path, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    missing = lpips_weights_missing("alex")
    assert missing is not None and "\n" not in missing
    assert (str(tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in missing
            or "it needs torchvision, which does not import here" in missing)  # (the oldest stack)
    with caplog.at_level(logging.WARNING, logger="pspl_lightning"):
        summary = eval_cli.evaluate(_cfg(tmp_path, *setup), console=Console(file=None, quiet=True))
    assert [s.images for s in summary] == [2]  # PSNR/SSIM as usual
    assert [r.getMessage() for r in caplog.records if "LPIPS" in r.getMessage()] == [missing]
    assert "lpips" not in json.loads((tmp_path / "run" / "results.json").read_text())
    with pytest.raises(ConfigError, match="metrics.lpips_net='resnet'"):
        lpips_weights_missing("resnet")


def test_lpips_without_torchvision_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # what an install without the zoo extra has
    assert lpips_weights_missing("vgg") == (
        "metrics.lpips=true: LPIPS skipped, it needs torchvision, which does not import here "
        "(ModuleNotFoundError; pip install 'pspl-lightning[zoo]'); PSNR/SSIM as usual")


def test_lpips_scores_each_image_on_the_8_bit_sr(setup: tuple[Path, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = []

    def stand_in(net: str, device: object):  # in place of torchmetrics' LPIPS: mean |sr - hr|, recorded
        def metric(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            pairs.append((sr.clone(), hr.clone()))
            return (sr - hr).abs().mean()
        return metric

    monkeypatch.setattr(eval_cli, "lpips_weights_missing", lambda net: None)
    monkeypatch.setattr(eval_cli, "lpips_metric", stand_in)
    eval_cli.evaluate(_cfg(tmp_path, *setup, "save_images=true"), console=Console(file=None, quiet=True))
    lpips = json.loads((tmp_path / "run" / "results.json").read_text())["lpips"]["Set5 x2"]
    expected = {}
    for name in ("chelsea", "coffee"):
        sr8 = read_image(tmp_path / "run" / "images" / "Set5" / "x2" / f"{name}.png").astype(np.float64)
        hr = read_image(setup[1] / "Set5" / "HR" / f"{name}.png").astype(np.float64)
        hr = hr[: sr8.shape[0], : sr8.shape[1]]
        expected[name] = float(np.abs(sr8 - hr).mean() / 255)
    assert lpips["images"] == pytest.approx(expected, rel=1e-5)
    assert lpips["mean"] == pytest.approx(sum(expected.values()) / 2, rel=1e-5)


@pytest.mark.slow
def test_lpips_with_a_backbone_file_in_the_hub_cache_is_torchmetrics(setup: tuple[Path, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A (random-weight) AlexNet file where torchvision caches it: LPIPS is built without a download and
    equals torchmetrics' functional LPIPS on the saved 8-bit SR against the HR."""
    from torchmetrics.functional.image.lpips import learned_perceptual_image_patch_similarity
    from torchvision.models import alexnet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(alexnet(weights=None).state_dict(), cached)
    assert lpips_weights_missing("alex") is None
    eval_cli.evaluate(_cfg(tmp_path, *setup, "save_images=true"), console=Console(file=None, quiet=True))
    lpips = json.loads((tmp_path / "run" / "results.json").read_text())["lpips"]["Set5 x2"]
    for name in ("chelsea", "coffee"):
        sr8 = read_image(tmp_path / "run" / "images" / "Set5" / "x2" / f"{name}.png")
        hr = read_image(setup[1] / "Set5" / "HR" / f"{name}.png")[: sr8.shape[0], : sr8.shape[1]]  # modcrop
        sr_t, hr_t = (torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 255
                      for a in (sr8, hr))
        expected = learned_perceptual_image_patch_similarity(sr_t, hr_t, net_type="alex", normalize=True)
        assert lpips["images"][name] == pytest.approx(float(expected), rel=1e-4)
