"""Tiled inference, the x8 self-ensemble and checkpoint / weights loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata
from torch import nn

from pspl_lightning.archs import EDSR, RCAN, RDN, SRCNN, VDSR, MSRResNet, TinySR
from pspl_lightning.cli.train import train
from pspl_lightning.export import export_model
from pspl_lightning.inference import (
    Upscaler,
    WeightsError,
    load_network,
    receptive_radius,
    self_ensemble,
    tiled_forward,
)
from pspl_lightning.inference.loading import FORMAT, LoadedNetwork
from tests.helpers.checkpoints import network_from_checkpoint

try:
    from tests.conftest import TINY, compose_config
except ImportError:  # tests/ without __init__.py: pytest puts tests/ itself on sys.path
    from conftest import TINY, compose_config

LR = torch.from_numpy(skdata.chelsea()[100:141, 150:203].copy()).permute(2, 0, 1)[None].float() / 255  # 41x53

ZOO = {
    "edsr": lambda: EDSR(2, n_resblocks=2, n_feats=8),
    "edsr_x3": lambda: EDSR(3, n_resblocks=1, n_feats=8),
    "edsr_x4": lambda: EDSR(4, n_resblocks=1, n_feats=8),
    "tiny": lambda: TinySR(2, n_feats=8),
    "vdsr": lambda: VDSR(2, n_layers=4, n_feats=8),
    "srcnn": lambda: SRCNN(3),
    "msrresnet": lambda: MSRResNet(4, n_resblocks=1, n_feats=8),
    "rdn": lambda: RDN(2, n_feats=8, n_blocks=1, n_layers=2, growth=4),
}


def _net(name: str) -> nn.Module:
    torch.manual_seed(0)
    return ZOO[name]().eval()


@pytest.mark.parametrize("name", list(ZOO))
def test_tiled_equals_untiled_when_overlap_covers_the_receptive_field(name: str) -> None:
    net = _net(name)
    scale = net.scale
    radius = receptive_radius(net)
    assert radius is not None and radius >= 2
    with torch.no_grad():
        full = net(LR)
        tiled = tiled_forward(net, LR, scale, tile=16, overlap=radius)
        short = tiled_forward(net, LR, scale, tile=16, overlap=0)
    assert tiled.shape == full.shape == (1, 3, 41 * scale, 53 * scale)
    assert (tiled - full).abs().max().item() < 1e-5
    assert (short - full).abs().max().item() > 1e-4  # without context the seams differ: the check can fail


def test_receptive_radius_of_edsr_baseline_is_its_conv_depth() -> None:
    # 1 head + 2 x 16 body + 1 body tail + 1 upsampler conv + 1 HR tail conv (rounded up to 1 LR pixel),
    # plus 2 for each module that changes the image size (EDSR, its tail, the upsampler)
    assert receptive_radius(EDSR(2)) == 36 + 3 * 2


def test_global_layers_make_tiling_approximate() -> None:
    torch.manual_seed(0)
    net = RCAN(2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4).eval()
    assert receptive_radius(net) is None
    loaded = LoadedNetwork(net, 2, {"_target_": "pspl_lightning.archs.RCAN"}, Path("rcan.pth"))
    with pytest.raises(ValueError, match="see the whole image.*set tile_overlap explicitly"):
        Upscaler(loaded, tile=16)(LR)  # LR is larger than a tile
    untiled = Upscaler(loaded)(LR)
    torch.testing.assert_close(Upscaler(loaded, tile=512)(LR), untiled)  # fits in one tile: no tiling needed
    assert Upscaler(loaded, tile=16, tile_overlap=8)(LR).shape == (1, 3, 82, 106)


def test_tiling_edge_cases() -> None:
    net = _net("tiny")
    with torch.no_grad():
        assert torch.equal(tiled_forward(net, LR, 2, tile=64, overlap=4), net(LR))  # one tile: plain forward
        odd = tiled_forward(net, LR, 2, tile=7, overlap=receptive_radius(net))
    assert (odd - net(LR)).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="tile must be >= 1"):
        tiled_forward(net, LR, 2, tile=0, overlap=4)
    with pytest.raises(ValueError, match="not x3: is the checkpoint's scale 3"):
        tiled_forward(net, LR, 3, tile=16, overlap=4)


def test_self_ensemble_is_the_mean_over_the_eight_symmetries() -> None:
    net = _net("edsr")
    with torch.no_grad():
        got = self_ensemble(net, LR)
        outs = []
        for k in range(4):  # independent enumeration: rotations by 90 degrees, with and without a mirror
            for mirror in (False, True):
                x = LR.flip(-1) if mirror else LR
                y = net(torch.rot90(x, k, dims=(-2, -1)))
                y = torch.rot90(y, -k, dims=(-2, -1))
                outs.append(y.flip(-1) if mirror else y)
        expected = torch.stack(outs).double().mean(0)
        plain = net(LR)
    assert got.shape == plain.shape and got.dtype == torch.float32
    assert (got.double() - expected).abs().max().item() < 1e-6
    assert (got - plain).abs().max().item() > 1e-3  # a non-symmetric network: the ensemble changes the output


def test_self_ensemble_of_a_symmetric_operation_is_that_operation() -> None:
    def nearest(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(2, -1).repeat_interleave(2, -2)

    assert (self_ensemble(nearest, LR) - nearest(LR)).abs().max().item() < 1e-7


# --- loading ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> Path:
    """A tiny EDSR x2 (1 block, 8 features) trained 6 steps by pspl-train's ``train``; built once per file."""
    out = tmp_path_factory.mktemp("train")
    cfg = compose_config("train", [*TINY, f"data.root={sample_root}"], out)
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


def _reference_net(ckpt: Path) -> nn.Module:
    """The network rebuilt by hand from the checkpoint's own state_dict (independent of the loader)."""
    return network_from_checkpoint(ckpt, EDSR(2, n_resblocks=1, n_feats=8))


def test_checkpoint_loads_with_its_config(trained_ckpt: Path) -> None:
    loaded = load_network(trained_ckpt)
    assert loaded.scale == 2 and isinstance(loaded.net, EDSR) and not loaded.net.training
    assert loaded.describe() == "EDSR(n_feats=8, n_resblocks=1, res_scale=1.0) x2"
    with torch.no_grad():
        assert torch.equal(loaded.net(LR), _reference_net(trained_ckpt)(LR))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_exported_weights_rebuild_the_same_network(trained_ckpt: Path, tmp_path: Path, suffix: str) -> None:
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    out = export_model(trained_ckpt, tmp_path / f"edsr{suffix}").output
    if suffix == ".pth":
        payload = torch.load(out, weights_only=True)
        assert payload["format"] == FORMAT and payload["scale"] == 2
        assert payload["model"]["_target_"] == "pspl_lightning.archs.EDSR"
        assert not any(k.startswith("net.") for k in payload["state_dict"])
    loaded = load_network(out)
    assert loaded.describe() == "EDSR(n_feats=8, n_resblocks=1, res_scale=1.0) x2"
    with torch.no_grad():
        assert torch.equal(loaded.net(LR), _reference_net(trained_ckpt)(LR))
    with pytest.raises(FileExistsError, match="exists; not replaced"):
        export_model(trained_ckpt, out)
    export_model(trained_ckpt, out, overwrite=True)


def test_checkpoint_of_another_scale_or_network_is_refused(trained_ckpt: Path) -> None:
    tiny = r"EDSR\(n_feats=8, n_resblocks=1, res_scale=1.0\) x2"
    with pytest.raises(WeightsError, match=rf"is a x2 model \({tiny}\), but scale 3 was asked"):
        load_network(trained_ckpt, scale=3)
    baseline = {"_target_": "pspl_lightning.archs.EDSR", "n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}
    asked = r"EDSR\(n_feats=64, n_resblocks=16, res_scale=1.0\)"
    with pytest.raises(WeightsError, match=rf"holds {tiny}, but the network asked for is {asked}"):
        load_network(trained_ckpt, model=baseline)
    rdn = {"_target_": "pspl_lightning.archs.RDN", "n_feats": 8}
    with pytest.raises(WeightsError, match=r"but the network asked for is RDN\(n_feats=8\)"):
        load_network(trained_ckpt, model=rdn)
    same = {"_target_": "pspl_lightning.archs.EDSR", "n_resblocks": 1, "n_feats": 8, "res_scale": 1.0,
            "scale": 7}  # the model's own scale key is not compared: ``scale`` is
    assert load_network(trained_ckpt, model=same, scale=2).scale == 2


def test_bare_state_dicts_need_a_model_config_unless_spandrel_knows_them(trained_ckpt: Path,
                                                                        tmp_path: Path) -> None:
    ref = _reference_net(trained_ckpt)
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, bare)  # as a DDP wrapper saves it
    cfg = {"_target_": "pspl_lightning.archs.EDSR", "n_resblocks": 1, "n_feats": 8, "res_scale": 1.0}
    loaded = load_network(bare, model=cfg, scale=2)
    with torch.no_grad():
        assert torch.equal(loaded.net(LR), ref(LR))
    if importlib.util.find_spec("spandrel") is None:  # no zoo extra (the oldest stack): nothing detects it
        with pytest.raises(WeightsError, match="spandrel is not installed.* pass model="):
            load_network(bare)
    else:
        detected = load_network(bare)  # EDSR is registered with spandrel: network and scale from the keys
        assert detected.describe() == "EDSR(n_feats=8, n_resblocks=1, res_scale=1.0) x2"
        with torch.no_grad():
            assert torch.equal(detected.net(LR), ref(LR))
    wrong = {**cfg, "n_feats": 16}
    with pytest.raises(WeightsError, match=r"do not fit EDSR\(n_feats=16, n_resblocks=1, res_scale=1.0\) x2"):
        load_network(bare, model=wrong, scale=2)
    torch.manual_seed(0)
    tiny = TinySR(2, n_feats=8).eval()  # spandrel knows no TinySR: the caller names the network
    unknown = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), unknown)
    with pytest.raises(WeightsError, match="spandrel does not recognise .* pass model="):
        load_network(unknown)
    tiny_cfg = {"_target_": "pspl_lightning.archs.TinySR", "n_feats": 8}
    with pytest.raises(WeightsError, match="without a scale"):
        load_network(unknown, model=tiny_cfg)
    with torch.no_grad():
        assert torch.equal(load_network(unknown, model=tiny_cfg, scale=2).net(LR), tiny(LR))


class _Payload:
    """A pickled object: refused by ``weights_only=True``, so never executed."""


def test_files_that_need_unpickling_code_or_do_not_exist_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "obj": _Payload()}, evil)
    with pytest.raises(WeightsError, match="evil.pth cannot be read as a weights-only checkpoint"):
        load_network(evil)
    with pytest.raises(WeightsError, match="missing.ckpt does not exist"):
        load_network(tmp_path / "missing.ckpt")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(WeightsError, match="array.npy cannot be read"):
        load_network(tmp_path / "array.npy")


