"""The model zoo: exact parameter counts (against a count written out here and the published one),
forward shapes at every scale, pre-upsampling that is MATLAB's bicubic, and a few training steps of every
network through the real config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from pspl_lightning.archs import EDSR, RCAN, RDN, SRCNN, VDSR, MSRResNet, TinySR
from pspl_lightning.cli.train import train
from pspl_lightning.imresize import imresize
from tests.conftest import compose_config
from tests.helpers.checkpoints import network_from_checkpoint


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def conv(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def upsampler(scale: int, f: int, out: int | None = None) -> int:
    out = f if out is None else out
    if scale == 4:
        return conv(f, 4 * out) + conv(out, 4 * out)
    return conv(f, scale * scale * out)


MEAN_SHIFTS = 2 * conv(3, 3, 1)  # two frozen 1x1 convs


def edsr_count(scale: int, blocks: int, f: int) -> int:
    return MEAN_SHIFTS + conv(3, f) + blocks * 2 * conv(f, f) + conv(f, f) + upsampler(scale, f) + conv(f, 3)


def rcan_count(scale: int, groups: int = 10, blocks: int = 20, f: int = 64, r: int = 16) -> int:
    rcab = 2 * conv(f, f) + conv(f, f // r, 1) + conv(f // r, f, 1)
    group = blocks * rcab + conv(f, f)
    return MEAN_SHIFTS + conv(3, f) + groups * group + conv(f, f) + upsampler(scale, f) + conv(f, 3)


def rdn_count(scale: int, g0: int = 64, d: int = 16, c: int = 8, g: int = 64) -> int:
    rdb = sum(conv(g0 + i * g, g) for i in range(c)) + conv(g0 + c * g, g0, 1)
    return (conv(3, g0) + conv(g0, g0) + d * rdb + conv(d * g0, g0, 1) + conv(g0, g0)
            + upsampler(scale, g0, g) + conv(g, 3))


def msrresnet_count(scale: int, blocks: int = 16, f: int = 64) -> int:
    return conv(3, f) + blocks * 2 * conv(f, f) + upsampler(scale, f) + conv(f, f) + conv(f, 3)


@pytest.mark.parametrize(
    ("make", "expected", "published", "rel"),
    [
        (lambda: EDSR(2), edsr_count(2, 16, 64), 1.37e6, 0.005),
        (lambda: EDSR(2, 32, 256, 0.1), edsr_count(2, 32, 256), 40.7e6, 0.005),
        (lambda: EDSR(4, 32, 256, 0.1), edsr_count(4, 32, 256), 43.1e6, 0.005),
        (lambda: RCAN(2), rcan_count(2), 15.4e6, 0.005),
        (lambda: RDN(2), rdn_count(2), 22.1e6, 0.005),
        (lambda: RDN(4), rdn_count(4), 22.3e6, 0.005),
        (lambda: RDN(2, 64, 20, 6, 32), rdn_count(2, 64, 20, 6, 32), None, None),  # configuration A
        (lambda: MSRResNet(4), msrresnet_count(4), 1_517_571, 0.0),  # BasicSR's published count
        (lambda: MSRResNet(2), msrresnet_count(2), 1.37e6, 0.005),
        (lambda: VDSR(2), conv(3, 64) + 18 * conv(64, 64) + conv(64, 3), 0.67e6, 0.005),
        (lambda: VDSR(3, channels="y"), conv(1, 64) + 18 * conv(64, 64) + conv(64, 1), 0.67e6, 0.01),
        (lambda: SRCNN(2), conv(1, 64, 9) + conv(64, 32, 5) + conv(32, 1, 5), 57_281, 0.0),  # 9-5-5, Y
        (lambda: SRCNN(2, (9, 1, 5)), conv(1, 64, 9) + conv(64, 32, 1) + conv(32, 1, 5), 8_129, 0.0),
        (lambda: SRCNN(4, channels="rgb"), conv(3, 64, 9) + conv(64, 32, 5) + conv(32, 3, 5), None, None),
    ],
    ids=["edsr_baseline_x2", "edsr_x2", "edsr_x4", "rcan_x2", "rdn_x2", "rdn_x4", "rdn_A_x2", "msrresnet_x4",
         "msrresnet_x2", "vdsr_rgb", "vdsr_y", "srcnn_955_y", "srcnn_915_y", "srcnn_955_rgb"],
)
def test_parameter_counts(make: Callable[[], torch.nn.Module], expected: int, published: float | None,
                          rel: float | None) -> None:
    count = n_params(make())
    assert count == expected
    if published is not None:
        assert count == pytest.approx(published, rel=rel, abs=0)


def test_published_counts_spelled_out() -> None:
    """The headline numbers, so a change in any block shows up as a readable diff."""
    assert n_params(EDSR(2)) - MEAN_SHIFTS == 1_369_859
    assert n_params(EDSR(2, 32, 256, 0.1)) - MEAN_SHIFTS == 40_729_603
    assert n_params(RCAN(2)) - MEAN_SHIFTS == 15_444_643
    assert n_params(RDN(2)) == 22_123_395


# docs/REPRODUCE.md's parameter-count table (x2 unless the overrides say otherwise) and the rounded
# "published" figures that README.md and the table quote: (model, overrides, trainable, frozen, published).
CONFIG_COUNTS = [
    ("edsr_baseline", [], 1_369_859, 24, "1.37M"),
    ("edsr", [], 40_729_603, 24, "40.7M"),
    ("rcan", [], 15_444_643, 24, "15.4M"),
    ("rdn", [], 22_123_395, 0, "22.1M"),
    ("msrresnet", [], 1_369_859, 0, "1.37M"),
    ("msrresnet", ["data.scale=4"], 1_517_571, 0, "1.52M"),
    ("vdsr", [], 668_227, 0, "0.67M"),
    ("vdsr", ["model.channels=y"], 665_921, 0, "0.67M"),
    ("srcnn", [], 57_281, 0, "57k"),
    ("srcnn", ["model.kernel_sizes=[9,1,5]"], 8_129, 0, "8k"),
    ("tiny", [], 12_483, 0, None),
]


def _rounds_to(count: int, text: str) -> bool:
    """Whether ``count`` printed to the precision of ``text`` ("1.37M", "57k") gives ``text``."""
    unit = {"M": 1e6, "k": 1e3}[text[-1]]
    decimals = len(text[:-1].partition(".")[2])
    return f"{count / unit:.{decimals}f}" == text[:-1]


@pytest.mark.parametrize(("name", "overrides", "trainable", "frozen", "published"), CONFIG_COUNTS,
                         ids=[f"{c[0]}{''.join('-' + o for o in c[1])}" for c in CONFIG_COUNTS])
def test_parameter_counts_of_the_model_configs(name: str, overrides: list[str], trainable: int, frozen: int,
                                               published: str | None, tmp_path: Path) -> None:
    """``configs/model/<name>.yaml`` as composed by ``pspl-train model=<name>`` (default data: x2) has the
    counts the docs give (``model`` holds constructor arguments only)."""
    cfg = compose_config("train", [f"model={name}", *overrides], tmp_path)
    net = instantiate(cfg.model)
    params = list(net.parameters())
    assert sum(p.numel() for p in params if p.requires_grad) == trainable
    assert sum(p.numel() for p in params if not p.requires_grad) == frozen
    if published is not None:
        assert _rounds_to(trainable, published)


def own_model_configs() -> set[str]:
    """configs/model/*.yaml but the spandrel zoo's (counted in docs/ZOO.md, tested in tests/test_zoo.py)."""
    return {p.stem for p in (Path(__file__).parents[1] / "configs" / "model").glob("*.yaml")
            if "archs.zoo." not in p.read_text()}


def test_rounding_helper() -> None:
    assert _rounds_to(1_369_859, "1.37M") and _rounds_to(57_281, "57k") and _rounds_to(40_729_603, "40.7M")
    assert not _rounds_to(1_375_000, "1.37M") and not _rounds_to(58_600, "57k")


def test_every_model_config_has_a_documented_count() -> None:
    configs = own_model_configs()
    assert configs == {c[0] for c in CONFIG_COUNTS}


SMALL = {
    "edsr": lambda s: EDSR(s, n_resblocks=2, n_feats=16, res_scale=0.1),
    "rcan": lambda s: RCAN(s, n_resgroups=2, n_resblocks=2, n_feats=16, reduction=4),
    "rdn": lambda s: RDN(s, n_feats=16, n_blocks=2, n_layers=3, growth=8),
    "msrresnet": lambda s: MSRResNet(s, n_resblocks=2, n_feats=16),
    "vdsr": lambda s: VDSR(s, n_layers=4, n_feats=8),
    "vdsr_y": lambda s: VDSR(s, n_layers=4, n_feats=8, channels="y"),
    "srcnn": lambda s: SRCNN(s, n_feats=(8, 4)),
    "srcnn_rgb": lambda s: SRCNN(s, n_feats=(8, 4), channels="rgb"),
    "tiny": lambda s: TinySR(s),
}


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_shape(name: str, scale: int) -> None:
    net = SMALL[name](scale)
    lr = torch.rand(2, 3, 10, 13)
    sr = net(lr)
    assert sr.shape == (2, 3, 10 * scale, 13 * scale)
    assert torch.isfinite(sr).all()
    sr.mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("cls", [EDSR, RCAN, RDN, MSRResNet, TinySR])
def test_unsupported_scale_is_rejected(cls: type) -> None:
    with pytest.raises(ValueError, match="supports model.scale 2, 3 or 4, got 5"):
        cls(5)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"model.channels must be one of \['rgb', 'y'\], got 'ycbcr'"):
        VDSR(2, channels="ycbcr")
    with pytest.raises(ValueError, match="model.kernel_sizes must be odd"):
        SRCNN(2, kernel_sizes=(9, 4, 5))
    with pytest.raises(ValueError, match="n_feats=60 must be divisible by model.reduction=16"):
        RCAN(2, n_feats=60)


def _matlab_bicubic(lr: torch.Tensor, scale: int) -> np.ndarray:
    """The data pipeline's MATLAB imresize, image by image, as B x C x H x W float64."""
    imgs = [imresize(img.permute(1, 2, 0).double().numpy(), scale) for img in lr]
    return np.stack(imgs).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_vdsr_is_matlab_bicubic_plus_a_residual(scale: int) -> None:
    """With the last conv zeroed VDSR outputs its input upscaled exactly as MATLAB's imresize does."""
    torch.manual_seed(0)
    net = VDSR(scale, n_layers=3, n_feats=8)
    torch.nn.init.zeros_(net.body[-1].weight)
    torch.nn.init.zeros_(net.body[-1].bias)
    lr = torch.rand(2, 3, 9, 14)
    np.testing.assert_allclose(net(lr).detach().double().numpy(), _matlab_bicubic(lr, scale), atol=2e-6)


def test_tiny_starts_from_bicubic() -> None:
    net = TinySR(3)
    torch.nn.init.zeros_(net.tail[-1].weight)
    torch.nn.init.zeros_(net.tail[-1].bias)
    lr = torch.rand(1, 3, 8, 11)
    np.testing.assert_allclose(net(lr).detach().double().numpy(), _matlab_bicubic(lr, 3), atol=2e-6)


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """Cb, Cr of full-range BT.601 YCbCr, written out (B x 2 x H x W)."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([(b - y) / 1.772 + 0.5, (r - y) / 1.402 + 0.5], axis=1)


def test_luma_only_networks_keep_the_bicubic_chroma() -> None:
    """channels=y: the network changes the luma only; Cb/Cr are those of the bicubic image, unclipped
    (bicubic of random pixels overshoots [0, 1]: a clamp anywhere would show here)."""
    torch.manual_seed(0)
    net = SRCNN(2, n_feats=(8, 4), channels="y")
    lr = torch.rand(1, 3, 12, 12)
    sr = net(lr).detach().double().numpy()
    bicubic = _matlab_bicubic(lr, 2)
    np.testing.assert_allclose(_chroma(sr), _chroma(bicubic), atol=1e-6)
    assert np.abs(sr - bicubic).max() > 1e-2  # while the luma did change


SMALL_OVERRIDES = {
    "edsr": ["model.n_resblocks=1", "model.n_feats=8"],
    "edsr_baseline": ["model.n_resblocks=1", "model.n_feats=8"],
    "rcan": ["model.n_resgroups=1", "model.n_resblocks=1", "model.n_feats=8", "model.reduction=4"],
    "rdn": ["model.n_feats=8", "model.n_blocks=2", "model.n_layers=2", "model.growth=4"],
    "msrresnet": ["model.n_resblocks=1", "model.n_feats=8"],
    "vdsr": ["model.n_layers=3", "model.n_feats=8"],
    "srcnn": ["model.n_feats=[8,4]", "model.kernel_sizes=[5,1,3]"],
    "tiny": [],
}
STEPS = ["data.patch_size=24", "data.batch_size=2", "data.repeat=1", "trainer.max_steps=2",
         "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
         "schedule.lr_milestones=[]", "logger=csv", "callbacks.progress_bar=null"]
CLASSES = {"edsr": EDSR, "edsr_baseline": EDSR, "rcan": RCAN, "rdn": RDN, "msrresnet": MSRResNet,
           "vdsr": VDSR, "srcnn": SRCNN, "tiny": TinySR}


def test_every_model_config_is_tested() -> None:
    configs = own_model_configs()
    assert configs == set(SMALL_OVERRIDES)


@pytest.mark.parametrize("name", sorted(SMALL_OVERRIDES))
def test_every_network_trains_through_the_config(name: str, train_cfg: Callable[..., DictConfig]) -> None:
    cfg = train_cfg(f"model={name}", "data.scale=3", *SMALL_OVERRIDES[name], *STEPS, tiny=False)
    metrics = train(cfg)
    assert np.isfinite(metrics["val/psnr_y"]) and metrics["val/psnr_y"] > 5.0
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(path, map_location="cpu", weights_only=True)["global_step"] == 2
    net = network_from_checkpoint(path)  # every network tensor in the file, and only those (strict)
    assert type(net) is CLASSES[name] and net.scale == 3
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 24, 24)
