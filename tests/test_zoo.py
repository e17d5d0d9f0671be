"""The zoo from spandrel (docs/ZOO.md): parameter counts as the doc's tables give them (parsed from the doc),
spandrel's detection of each network's state dict, odd-size output shapes, training through the config and
through ``SRModule`` with every loss at every scale, and one-line errors for bad names and keywords."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from pspl_lightning.archs.zoo import scale_keyword, spandrel_class, spandrel_net
from pspl_lightning.cli.build import build
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError
from pspl_lightning.inference.warm_start import load_matching_weights
from pspl_lightning.module import SRModule
from tests.conftest import compose_config

spandrel = pytest.importorskip("spandrel")

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "ZOO.md"
CONFIGS = ["compact", "esrgan", "span", "swinir_light", "swinir", "hat_s", "dat_light", "omnisr", "plksr"]
# issue 31's named configs: counted, padded and ranged here; trained and exported per class in
# tests/test_zoo_all.py (small options), so the default suite does not train each config again
NEW_CONFIGS = ["safmn", "plksr_tiny", "realplksr", "swin2sr", "atd_light", "drct_light"]
NAMED = CONFIGS + NEW_CONFIGS
SCALES = (2, 3, 4)

# Small widths and depths of each config: the same classes and code paths, seconds on a CPU.
SMALL = {
    "compact": ["model.num_feat=8", "model.num_conv=2"],
    "esrgan": ["model.num_filters=8", "model.num_blocks=1"],
    "span": ["model.feature_channels=8"],
    "swinir_light": ["model.embed_dim=12", "model.depths=[1]", "model.num_heads=[2]", "model.window_size=4"],
    "swinir": ["model.embed_dim=12", "model.depths=[1]", "model.num_heads=[2]", "model.window_size=4"],
    "hat_s": ["model.embed_dim=12", "model.depths=[1]", "model.num_heads=[2]", "model.window_size=4",
              "model.compress_ratio=3", "model.squeeze_factor=3"],
    "dat_light": ["model.embed_dim=32", "model.depth=[2]", "model.num_heads=[2]", "model.split_size=[2,4]"],
    "omnisr": ["model.num_feat=8", "model.res_num=1"],
    "plksr": ["model.dim=8", "model.n_blocks=1", "model.kernel_size=5"],
    "safmn": ["model.dim=8", "model.n_blocks=1"],
    "plksr_tiny": ["model.dim=8", "model.n_blocks=1", "model.kernel_size=5"],
    "realplksr": ["model.dim=8", "model.n_blocks=1", "model.kernel_size=5"],
    "swin2sr": ["model.embed_dim=12", "model.depths=[1]", "model.num_heads=[2]", "model.window_size=4"],
    "atd_light": ["model.embed_dim=12", "model.depths=[2]", "model.num_heads=[2]", "model.window_size=4",
                  "model.num_tokens=8", "model.reducted_dim=4", "model.convffn_kernel_size=3"],
    "drct_light": ["model.embed_dim=12", "model.depths=[1]", "model.num_heads=[2]", "model.window_size=4",
                   "model.gc=4"],
}


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def doc_counts(doc: Path = DOC) -> dict[str, dict[int, int]]:
    """The count table of docs/ZOO.md (or README.md's copy): {config: {scale: parameters}}."""
    rows = re.findall(r"^\| `(\w+)` \| \w+ \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|", doc.read_text(), re.M)
    return {name: dict(zip(SCALES, map(_number, counts), strict=True)) for name, *counts in rows}


def doc_published() -> list[tuple[str, int, str, list[str]]]:
    """docs/ZOO.md's table against the papers: (config, scale, paper figure, name parts left out)."""
    rows = re.findall(r"^\| `(\w+)` \| x(\d) \| ([\d.]+[KM]) \| (all[^|]*) \|", DOC.read_text(), re.M)
    return [(name, int(s), paper, re.findall(r"`([^`]+)`", counted)) for name, s, paper, counted in rows]


def _rounds_to(count: int, text: str) -> bool:
    unit = {"M": 1e6, "K": 1e3}[text[-1]]
    decimals = len(text[:-1].partition(".")[2])
    return f"{count / unit:.{decimals}f}" == text[:-1]


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _model_cfg(name: str, scale: int, tmp_path: Path, *overrides: str) -> DictConfig:
    return compose_config("train", [f"model={name}", f"data.scale={scale}", *overrides], tmp_path).model


def test_the_doc_lists_every_zoo_config() -> None:
    assert sorted(doc_counts()) == sorted(NAMED)
    assert doc_counts(ROOT / "README.md") == doc_counts()  # README's copy of the table
    zoo_configs = {p.stem for p in (ROOT / "configs" / "model").glob("*.yaml")
                   if "archs.zoo." in p.read_text() and p.stem != "spandrel"}  # spandrel: any id
    assert zoo_configs == set(NAMED)
    assert sorted(SMALL) == sorted(NAMED)
    assert len(doc_published()) == 9


@contextmanager
def no_init() -> Iterator[None]:
    """Build without filling the weights (torch's and spandrel's random initialisers do nothing): a count
    depends on the shapes only, and the fills are most of a build's time (seconds for the transformers)."""
    def keep(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return tensor

    import spandrel.util.timm as timm_util

    fills = {name: keep for name in ("uniform_", "normal_", "kaiming_uniform_", "_no_grad_trunc_normal_")}
    timm_init = sys.modules[timm_util.trunc_normal_.__module__]
    with mock.patch.multiple(torch.nn.init, **fills), \
            mock.patch.object(timm_init, "_no_grad_trunc_normal_", keep):
        yield


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: these small forwards gain nothing from two, and on a shared machine two threads
    fighting for busy cores made the transformers' forwards 6-10x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", NAMED)
def test_parameter_counts_as_documented(name: str, scale: int, tmp_path: Path) -> None:
    """``model=<name> data.scale=<scale>`` builds spandrel's class itself with the doc's count."""
    cfg = _model_cfg(name, scale, tmp_path)
    assert "init_from" not in cfg
    with no_init():
        net = build(cfg)
    assert type(net) is spandrel_class(cfg.arch)  # spandrel's class itself, no wrapper
    assert net.scale == scale and net.scale_dependent
    assert n_params(net) == doc_counts()[name][scale]


def _check_odd_size_and_detection(net: torch.nn.Module, arch: str, name: str, scale: int) -> None:
    """A 13 x 17 input gives exactly scale x that size (the class pads to its window and crops itself);
    spandrel's loader, given the state dict, builds the same class at the same scale with the same count."""
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 3, 13, 17))
    assert out.shape == (1, 3, 13 * scale, 17 * scale) and torch.isfinite(out).all()
    descriptor = spandrel.ModelLoader().load_from_state_dict(net.state_dict())
    assert descriptor.architecture.id == arch
    assert type(descriptor.model) is type(net)
    assert n_params(descriptor.model) == n_params(net)
    # spandrel counts ESRGAN's upsampling stages as powers of two: x3 is read as x2 (docs/ZOO.md)
    assert descriptor.scale == (2 if (name, scale) == ("esrgan", 3) else scale)
    with torch.no_grad():
        torch.testing.assert_close(descriptor.model.eval()(torch.rand(1, 3, 9, 11)).shape[-2:],
                                   (9 * descriptor.scale, 11 * descriptor.scale))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", CONFIGS)
def test_odd_sizes_and_spandrel_detection(name: str, scale: int, tmp_path: Path) -> None:
    cfg = _model_cfg(name, scale, tmp_path, *SMALL[name])
    _check_odd_size_and_detection(build(cfg), cfg.arch, name, scale)


@pytest.mark.slow
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", CONFIGS)
def test_odd_sizes_and_spandrel_detection_full_size(name: str, scale: int, tmp_path: Path) -> None:
    """The same at full size (10-50 s per case on a busy 2-core CPU; the small widths above are the
    default suite's variant)."""
    cfg = _model_cfg(name, scale, tmp_path)
    _check_odd_size_and_detection(build(cfg), cfg.arch, name, scale)


@pytest.mark.parametrize(("name", "scale", "paper", "left_out"), doc_published(),
                         ids=[f"{r[0]}-x{r[1]}" for r in doc_published()])
def test_counts_against_the_papers(name: str, scale: int, paper: str, left_out: list[str],
                                   tmp_path: Path) -> None:
    net = build(_model_cfg(name, scale, tmp_path))
    counted = sum(p.numel() for k, p in net.named_parameters() if not any(part in k for part in left_out))
    assert _rounds_to(counted, paper)
    assert counted < n_params(net) if left_out else counted == n_params(net)


def test_the_notes_under_the_tables(tmp_path: Path) -> None:
    """SwinIR-light's bias tables, SPAN's trainable count, OmniSR's gap to its paper, as worded."""
    text = " ".join(DOC.read_text().split())
    light = build(_model_cfg("swinir_light", 2, tmp_path))
    bias = sum(p.numel() for k, p in light.named_parameters() if "relative_position_bias_table" in k)
    assert bias == 32_400 == 24 * 15**2 * 6 and "(32,400 entries in SwinIR-light" in text
    spans = [build(_model_cfg("span", s, tmp_path)) for s in SCALES]
    trainable = [sum(p.numel() for p in net.parameters() if p.requires_grad) for net in spans]
    assert f"({trainable[0]:,} / {trainable[1]:,} / {trainable[2]:,} trainable parameters" in text
    papers = (772_000, 780_000, 792_000)
    gaps = [doc_counts()["omnisr"][s] - paper for s, paper in zip(SCALES, papers, strict=True)]
    assert (f"772K / 780K / 792K (x2 / x3 / x4); spandrel's class has {gaps[0]:,} / {gaps[1]:,} / "
            f"{gaps[2]:,} more") in text


@pytest.mark.parametrize("name", CONFIGS)
def test_scale_keyword_and_scale_dependent_prefixes(name: str, tmp_path: Path) -> None:
    """``scale`` reaches the class's own keyword (spandrel records it in ``hyperparameters``), and every
    tensor whose name or shape differs between x3 and x4 lies under ``scale_dependent``: what a warm start
    from another scale skips (small widths)."""
    nets = {s: build(_model_cfg(name, s, tmp_path, *SMALL[name])) for s in (3, 4)}
    keyword = scale_keyword(_model_cfg(name, 3, tmp_path).arch)
    states = {s: net.state_dict() for s, net in nets.items()}
    for s, net in nets.items():
        assert net.hyperparameters[keyword] == s == net.scale
        other = states[7 - s]
        moving = [k for k, v in states[s].items() if k not in other or other[k].shape != v.shape]
        assert moving and all(k.startswith(net.scale_dependent) for k in moving), moving
        assert any(not k.startswith(net.scale_dependent) for k in states[s])  # the upsampler, not all


def test_the_padding_column() -> None:
    """Rows that say the class pads in its own ``forward`` name classes with spandrel's ``check_image_size``
    (called there); the others have none (DAT pads inside its attention, the rest need no window)."""
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| [\d,]+ \|.*\| ([^|]+) \|$", DOC.read_text(), re.M)
    assert len(rows) == len(NAMED)
    for _, arch, padding in rows:
        pads_in_forward = f"`{arch}.forward`" in padding
        assert pads_in_forward == hasattr(spandrel_class(arch), "check_image_size"), arch
        assert pads_in_forward or padding.startswith(("none needed", "inside spandrel's DAT attention",
                                                      "inside spandrel's ATD forward", "none: "))


def test_input_range_handling(tmp_path: Path) -> None:
    """docs/ZOO.md's Input range: which classes shift by the DIV2K mean and scale by img_range."""
    div2k = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
    for name in NAMED:
        net = build(_model_cfg(name, 2, tmp_path, *SMALL[name]))
        if name in ("swinir_light", "swinir", "hat_s", "dat_light", "swin2sr", "atd_light", "drct_light"):
            assert net.img_range == 1.0 and torch.equal(net.mean, div2k), name
        elif name == "span":
            assert net.img_range == 255.0 and net.is_norm and torch.equal(net.mean, div2k)
        else:  # used as is
            assert not hasattr(net, "img_range") and not hasattr(net, "mean"), name


def test_omnisr_needs_nine_pixels(tmp_path: Path) -> None:
    """OmniSR pads to a multiple of its window (8), and its ESA block's pooling needs the padded 16."""
    net = build(_model_cfg("omnisr", 2, tmp_path, *SMALL["omnisr"])).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 9, 9)).shape == (1, 3, 18, 18)
        with pytest.raises(RuntimeError, match="Output size is too small"):
            net(torch.rand(1, 3, 8, 8))


# Every config trains two PSPL steps through pspl-train's training function at one of the scales (each
# scale three times over the nine configs), with small widths and LR patches of 16.
STEPS = ["data.batch_size=2", "data.repeat=1", "trainer.max_steps=2", "trainer.val_check_interval=2",
         "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false", "schedule.lr_milestones=[]",
         "logger=csv", "callbacks.progress_bar=null", "loss=pspl"]
TRAIN_SCALES = dict(zip(CONFIGS, [2, 3, 4] * 3, strict=True))


@pytest.mark.parametrize("name", CONFIGS)
def test_two_pspl_steps_through_the_config(name: str, train_cfg: Callable[..., DictConfig]) -> None:
    scale = TRAIN_SCALES[name]
    cfg = train_cfg(f"model={name}", f"data.scale={scale}", f"data.patch_size={16 * scale}", *SMALL[name],
                    *STEPS, tiny=False)
    metrics = train(cfg)
    assert np.isfinite(metrics["val/psnr_y"]) and metrics["val/psnr_y"] > 5.0
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    assert ckpt["global_step"] == 2
    model = ckpt["pspl_config"]["model"]
    assert model["_target_"] == "pspl_lightning.archs.zoo.spandrel_net" and "init_from" not in model
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net = spandrel_net(**{k: v for k, v in model.items() if k != "_target_"})
    net.load_state_dict(state)  # strict: the community key names, nothing added or missing
    assert net.scale == scale
    descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    assert descriptor.architecture.id == model["arch"]
    # warm start at another scale from this checkpoint: all but the scale-dependent tensors load
    other = spandrel_net(**{k: v for k, v in model.items() if k not in ("_target_", "scale")},
                         scale=2 if scale != 2 else 3)
    report = load_matching_weights(other, Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert set(report.loaded) == {k for k in other.state_dict() if not k.startswith(other.scale_dependent)}
    assert report.skipped and all(k.startswith(other.scale_dependent) for k in report.skipped)  # upsampler


def test_span_saves_the_eval_convs_of_its_trained_branches(tmp_path: Path) -> None:
    """After training-mode updates (no eval forward in between) SPAN's state dict holds each eval_conv
    recomputed from the branches (spandrel's class alone would keep the stale one)."""
    net = build(_model_cfg("span", 2, tmp_path, *SMALL["span"])).train()
    conv = net.block_1.c1_r
    stale = conv.eval_conv.weight.detach().clone()
    with torch.no_grad():
        for p in conv.conv.parameters():
            p.add_(0.01)
    saved = net.state_dict()["block_1.c1_r.eval_conv.weight"]
    assert not torch.allclose(saved, stale)
    plain = spandrel_class("SPAN")(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)
    plain.load_state_dict(net.state_dict())
    plain.eval()(torch.rand(1, 3, 8, 8))  # spandrel's eval forward recomputes eval_conv from the branches
    torch.testing.assert_close(plain.block_1.c1_r.eval_conv.weight, saved)
    assert not any(p.requires_grad for n, p in net.named_parameters() if "eval_conv" in n)


def _small_net_config(name: str, scale: int, tmp_path: Path) -> dict:
    return OmegaConf.to_container(_model_cfg(name, scale, tmp_path, *SMALL[name]), resolve=True)


def _fit_two_steps(net_cfg: dict, loss: str, scale: int, tmp_path: Path) -> SRModule:
    """Two optimizer steps of ``SRModule`` (the module attaches PSPL's pace itself) on random 16-pixel
    LR patches; returns the module after asserting the steps changed the network and left it finite.
    (Not every weight moves: PSPL's first weights are near zero by design, sigma starting at 0.001, and
    a deep network at random initialisation has dead or vanishing units.)"""
    loss_cfg = OmegaConf.to_container(compose_config("train", [f"loss={loss}"], tmp_path).loss, resolve=True)
    module = SRModule(net=net_cfg, loss=loss_cfg, scale=scale,
                      optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3})
    before = {k: p.detach().clone() for k, p in module.net.named_parameters() if p.requires_grad}
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16 * scale, 16 * scale,
                                                                           generator=g))
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=2))
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    changed = [k for k, p in module.net.named_parameters() if k in before and not torch.equal(p, before[k])]
    assert changed and all(torch.isfinite(p).all() for p in module.net.parameters())
    return module


LOSSES = ["pspl", "pspl_normalized", "l1", "charbonnier"]
# each (loss, scale) pair on one of the zoo configs, in turn: every config trains with several losses
PAIRS = [(loss, scale, CONFIGS[i % len(CONFIGS)])
         for i, (loss, scale) in enumerate((loss, scale) for loss in LOSSES for scale in SCALES)]


@pytest.mark.parametrize(("loss", "scale", "name"), PAIRS, ids=[f"{n}-{lo}-x{s}" for lo, s, n in PAIRS])
def test_every_loss_at_every_scale_through_srmodule(loss: str, scale: int, name: str, tmp_path: Path) -> None:
    module = _fit_two_steps(_small_net_config(name, scale, tmp_path), loss, scale, tmp_path)
    assert type(module.loss).__name__ == {"pspl": "PSPLLoss", "pspl_normalized": "PSPLLoss", "l1": "L1Loss",
                                          "charbonnier": "CharbonnierLoss"}[loss]


@pytest.mark.slow
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_every_loss_every_scale(name: str, loss: str, scale: int, tmp_path: Path) -> None:
    """The whole matrix (108 fits; the default suite runs the 12 pairs above and PSPL for every config)."""
    _fit_two_steps(_small_net_config(name, scale, tmp_path), loss, scale, tmp_path)


@pytest.mark.parametrize(("override", "message"), [
    ("model.arch=Swin", r"^model.arch='Swin' is not in the zoo: expected one of spandrel's upscaling ids "
                        r"ATD, AuraSR, CRAFT, Compact, .*, Swin2SR, SwinIR$"),
    ("model.arch=SCUNet", r"^model.arch=SCUNet does not upscale \(spandrel's SCUNet is a restoration "
                          r"network\); the zoo trains the ones that do: ATD, AuraSR, .*, SwinIR$"),
    ("+model.embed_dims=60", r"^model.embed_dims is not an argument of spandrel's SwinIR: expected some of "
                             r"\['img_size', 'patch_size', 'in_chans', 'embed_dim', .*\]$"),
    ("+model.upscale=4", r"^model.upscale: the scale of model.arch=SwinIR follows data.scale "
                         r"\(model.scale\); remove model.upscale$"),
    ("data.scale=5", r"^model.arch=SwinIR supports model.scale 2, 3 or 4, got 5"),
])
def test_config_mistakes_are_one_line(override: str, message: str, tmp_path: Path) -> None:
    """``build`` (what pspl-train instantiates through) raises the factory's ConfigError itself, which the
    entry points print as one line with exit status 2 (tests/test_user_errors.py)."""
    with pytest.raises(ConfigError, match=message) as err:
        build(_model_cfg("swinir_light", 2, tmp_path, override))
    assert "\n" not in str(err.value)



def test_realesrgan_x2plus_is_another_layout(tmp_path: Path) -> None:
    """RealESRGAN_x2plus's layout (the x4 network on a 2x pixel-unshuffled input: 12 input channels) loads in
    spandrel as x2, but differs from what ``model=esrgan data.scale=2`` builds (docs/ZOO.md)."""
    x2plus = spandrel_class("ESRGAN")(in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4,
                                      shuffle_factor=2)
    descriptor = spandrel.ModelLoader().load_from_state_dict(x2plus.state_dict())
    assert descriptor.scale == 2 and "unshuffle" in descriptor.tags
    ours = build(_model_cfg("esrgan", 2, tmp_path, *SMALL["esrgan"])).state_dict()
    assert ours["model.0.weight"].shape[1] == 3 != x2plus.state_dict()["model.0.weight"].shape[1]
