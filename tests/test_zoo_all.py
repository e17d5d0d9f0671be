"""Every upscaling id of spandrel's registry through the zoo (``model=spandrel model.arch=<id>``): it builds
with small options (the table below), takes one PSPL step, exports to ``.safetensors`` that spandrel loads
back as the same id and scale with identical output; docs/ZOO.md's "Every spandrel architecture" table is
what these tests compute (its ONNX column: the slow test). ``python -m tests.test_zoo_all`` prints the rows.
"""

from __future__ import annotations

import functools
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pspl_lightning.archs.zoo import (
    REFUSED,
    SCALES,
    class_defaults,
    scale_keyword,
    skip_weight_init,
    spandrel_class,
    spandrel_net,
    upscaling_ids,
)
from pspl_lightning.errors import ConfigError, UserError

spandrel = pytest.importorskip("spandrel")
pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ZOO.md"

# The smallest options per id that keep its code paths (one block, a few channels): seconds on a CPU.
SMALL: dict[str, dict] = {
    "ATD": dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4, num_tokens=8,
                reducted_dim=4, convffn_kernel_size=3, mlp_ratio=1.0),
    "CRAFT": dict(embed_dim=32, depths=[1], num_heads=[2], split_size_0=2, split_size_1=4),
    "Compact": dict(num_feat=8, num_conv=2),
    "DAT": dict(embed_dim=32, depth=[1], num_heads=[2], split_size=[2, 4], expansion_factor=1.0),
    "DCTLSA": dict(nf=10),
    "DITN": dict(dim=12, ITL_blocks=1, SAL_blocks=1),
    "DRCT": dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4, gc=4),
    "ESRGAN": dict(num_filters=8, num_blocks=1),
    "FDAT": dict(embed_dim=16, num_groups=1, depth_per_group=1, num_heads=2, window_size=4, mid_dim=8),
    "GRL": dict(embed_dim=12, depths=[1], num_heads_window=[1], num_heads_stripe=[1], mlp_ratio=1.0,
                window_size=4, stripe_size=[4, 4]),
    "HAT": dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4, compress_ratio=3, squeeze_factor=3,
                num_feat=8),
    "MMRealSR": dict(num_feat=8, num_block=1, num_grow_ch=4, num_feats=[8, 8, 8, 8], num_blocks=[1, 1, 1, 1]),
    "MoESR": dict(dim=8, n_blocks=1, n_block=1, upsample_dim=8),
    "MoSR": dict(n_block=1, dim=8),
    "OmniSR": dict(num_feat=8, res_num=1),
    "PLKSR": dict(dim=8, n_blocks=1, kernel_size=5),
    "RCAN": dict(n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4),
    "RGT": dict(embed_dim=32, depth=[1], num_heads=[2], split_size=[2, 4]),
    "RealCUGAN": dict(),
    "SAFMN": dict(dim=8, n_blocks=1),
    "SPAN": dict(feature_channels=8),
    "SeemoRe": dict(num_experts=2, num_layers=1, embedding_dim=8),
    "SwiftSRGAN": dict(num_channels=8, num_blocks=1),
    "Swin2SR": dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4),
    "SwinIR": dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4),
}
LR_SIZE = {"RealCUGAN": 24}  # its reflection padding needs more than 16 pixels; the others train on 16
# GRL exports at the window and stripes spandrel's loader assumes (the zoo's defaults for GRL): 10 s a case
ROUND_TRIP = {"GRL": {k: v for k, v in SMALL["GRL"].items() if k not in ("window_size", "stripe_size")}}
# RealPLKSR is the other class under spandrel's PLKSR id (model.arch=RealPLKSR)
VARIANTS = {"RealPLKSR": dict(dim=8, n_blocks=1, kernel_size=5)}


def trainable_ids() -> list[str]:
    """The upscaling ids that build with their small options at x2 (the others are refused in one line)."""
    return [a for a in upscaling_ids() if a not in REFUSED and a in SMALL and _builds(a, 2)]


@functools.cache
def _builds(arch: str, scale: int) -> bool:
    try:
        with skip_weight_init():  # shapes and the output size only
            spandrel_net(arch, scale, **SMALL.get(arch, VARIANTS.get(arch, {})))
    except ConfigError:
        return False
    return True


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def params_at_x2(arch: str) -> int:
    """Parameters of the class as ``model=spandrel model.arch=<arch> data.scale=2`` builds it (defaults)."""
    cls = spandrel_class(arch, 2)
    keyword = scale_keyword(arch)
    kwargs = {**class_defaults(arch), **({keyword: [2] if arch == "IPT" else 2} if keyword else {})}
    with skip_weight_init():
        return _n_params(cls(**kwargs))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_upscaling_id_has_small_options_and_a_doc_row() -> None:
    """The registry's upscaling ids (read from spandrel's loaders) are the SMALL table's and the doc's rows;
    the restoration ids are refused (test below)."""
    ids = upscaling_ids()
    assert {"SwinIR", "HAT", "SAFMN", "RealCUGAN", "ATD", "DRCT", "FDAT"} <= set(ids)
    assert not {"SCUNet", "NAFNet", "DnCNN", "GFPGAN", "LaMa", "SAFMNBCIE"} & set(ids)
    assert sorted(SMALL) == sorted(a for a in ids if a not in REFUSED)
    assert sorted(doc_rows()) == sorted([*ids, *VARIANTS])


@functools.cache
def _pspl_config() -> dict:
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    with tempfile.TemporaryDirectory() as tmp:
        return OmegaConf.to_container(compose_config("train", ["loss=pspl"], Path(tmp)).loss, resolve=True)


def pspl_step(net: torch.nn.Module, scale: int, lr_size: int) -> float:
    """One Adam step of the PSPL loss (the project's config) on a random batch of 2; the loss."""
    from hydra.utils import instantiate

    loss = instantiate(_pspl_config())
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(2, 3, lr_size, lr_size, generator=g)
    hr = torch.rand(2, 3, lr_size * scale, lr_size * scale, generator=g)
    params = [p for p in net.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    # at step 2000 (sigma 2): at step 0 PSPL's weights are near zero by design, too small to move every net
    value, _ = loss.loss_and_weights(net.train()(lr), hr, loss.sigma_at(2000))
    value.backward()
    optimizer.step()
    assert torch.isfinite(value)
    assert any(not torch.equal(p, b) for p, b in zip(params, before, strict=True))
    return float(value)


def export_round_trip(arch: str, net: torch.nn.Module, options: dict, scale: int, tmp_path: Path) -> float:
    """pspl-export of ``net`` to .safetensors: spandrel reads it as the same id and scale with the same output
    (torch.equal), and the export reports 0."""
    from pspl_lightning.export import export_model
    from tests.test_export import pspl_checkpoint

    model = {"_target_": "pspl_lightning.archs.zoo.spandrel_net", "arch": arch, **options}
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net.eval(), model, scale)
    result = export_model(ckpt, tmp_path / f"{arch}.safetensors")
    descriptor = spandrel.ModelLoader().load_from_file(result.output)
    assert descriptor.architecture.id == net.spandrel_id and descriptor.scale == scale
    assert type(descriptor.model) is type(net)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) if arch != "RealCUGAN" else \
        torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # clones: RCAN scales its input in place
        assert torch.equal(descriptor.model.eval()(x.clone()), net.eval()(x.clone()))
    assert result.max_abs_diff == 0
    return result.max_abs_diff


def _check_scale_dependent(arch: str, net: torch.nn.Module, options: dict) -> None:
    """Every tensor whose shape differs at x4 (or that x4 lacks) is under ``scale_dependent``."""
    other = spandrel_net(arch, 4, **options).state_dict()
    moving = [k for k, v in net.state_dict().items() if k not in other or other[k].shape != v.shape]
    assert all(k.startswith(net.scale_dependent) for k in moving), (moving, net.scale_dependent)
    assert any(not k.startswith(net.scale_dependent) for k in net.state_dict())


# GRL at the window and stripes spandrel's loader assumes pads a 16-pixel input to 64 (10 s), and any GRL
# export check runs spandrel's GRL so (5 s): the default suite trains GRL with a window of 4 (below).
DEFAULT_IDS = [pytest.param(a, marks=pytest.mark.slow) if a == "GRL" else a
               for a in [*sorted(SMALL), *VARIANTS]]


def test_grl_trains_with_a_small_window() -> None:
    net = spandrel_net("GRL", 2, **SMALL["GRL"])
    assert net.hyperparameters["window_size"] == 4
    pspl_step(net, 2, 16)


@pytest.mark.slow
def test_grl_with_options_spandrel_cannot_read_is_refused_in_one_line(tmp_path: Path) -> None:
    """A GRL trained with a window of 4 exports to a file spandrel would read with its assumed window 32 and
    stripes 64: the export is refused in one line naming them, and nothing is written."""
    options = SMALL["GRL"]
    net = spandrel_net("GRL", 2, **options)
    pspl_step(net, 2, 16)
    with pytest.raises(UserError, match=r"^GRL x2: spandrel's ModelLoader reads the written file with a "
                                        r"largest output difference of [\d.e-]+ on a 41x27 input \(it reads "
                                        r"window_size=32 for 4, stripe_size=\[64, 64\] for \[4, 4\]\); "
                                        r"nothing written$"):
        export_round_trip("GRL", net, options, 2, tmp_path)
    assert not (tmp_path / "GRL.safetensors").exists()


@pytest.mark.parametrize("arch", DEFAULT_IDS)
def test_every_upscaling_id_builds_trains_and_exports(arch: str, tmp_path: Path) -> None:
    options = ROUND_TRIP.get(arch, SMALL.get(arch, VARIANTS.get(arch)))
    if arch in ("MMRealSR",):
        with pytest.raises(ConfigError, match=rf"^model.arch={arch}") as err:
            spandrel_net(arch, 2, **options)
        assert "\n" not in str(err.value)
        return
    torch.manual_seed(0)
    net = spandrel_net(arch, 2, **options)
    assert type(net) is spandrel_class(arch, 2) and net.scale == 2 and net.arch == arch
    if arch != "SwiftSRGAN":  # its x2 and x4 share every x2 tensor: nothing to skip
        _check_scale_dependent(arch, net, options)
    pspl_step(net, 2, LR_SIZE.get(arch, 16))
    export_round_trip(arch, net, options, 2, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [3, 4])
@pytest.mark.parametrize("arch", [*sorted(SMALL), *VARIANTS])
def test_every_upscaling_id_at_x3_and_x4(arch: str, scale: int, tmp_path: Path) -> None:
    """The same at x3 and x4 where the id builds there (docs/ZOO.md's scales column)."""
    options = ROUND_TRIP.get(arch, SMALL.get(arch, VARIANTS.get(arch)))
    if not _builds(arch, scale):
        assert str(scale) not in doc_rows()[arch]["scales"]
        return
    net = spandrel_net(arch, scale, **options)
    pspl_step(net, scale, LR_SIZE.get(arch, 16))
    if (arch, scale) == ("ESRGAN", 3):
        return  # refused by the export (tests/test_export.py)
    export_round_trip(arch, net, options, scale, tmp_path)


# options a state dict does not hold, set otherwise than spandrel's loader assumes: (options, what it reads)
UNREADABLE = {
    "CRAFT": ({"window_size": 8}, "window_size=16 for 8"),
    "DITN": ({"patch_size": 4}, "patch_size=8 for 4"),
    "DCTLSA": ({"num_head": 2}, "num_head=5 for 2"),
    "ATD": ({"category_size": 128}, "category_size=256 for 128"),
    "SeemoRe": ({"recursive": 1}, "recursive=2 for 1"),
}


@pytest.mark.parametrize("arch", sorted(UNREADABLE))
def test_options_spandrel_cannot_read_are_refused_naming_them(arch: str, tmp_path: Path) -> None:
    """docs/ZOO.md's notes: the export check finds the file spandrel would read otherwise, names the option,
    and writes nothing."""
    change, reads = UNREADABLE[arch]
    options = {**SMALL[arch], **change}
    net = spandrel_net(arch, 2, **options)
    with pytest.raises(UserError, match=rf"^{arch} x2: spandrel's ModelLoader reads the written file with a "
                                        rf"largest output difference of [\d.e-]+ on a \d+x\d+ input \(it "
                                        rf"reads {re.escape(reads)}\); nothing written$"):
        export_round_trip(arch, net, options, 2, tmp_path)
    assert not (tmp_path / f"{arch}.safetensors").exists()


@pytest.mark.parametrize(("arch", "message"), [
    ("SCUNet", r"^model.arch=SCUNet does not upscale \(spandrel's SCUNet is a restoration network\); the zoo "
               r"trains the ones that do: ATD, AuraSR, CRAFT, .*, SwinIR$"),
    ("AuraSR", r"^model.arch=AuraSR is not trained here: spandrel's AuraSR is a fixed-x4 GAN upsampler"),
    ("IPT", r"^model.arch=IPT is not trained here: spandrel's IPT is a multi-task transformer"),
    ("MMRealSR", r"^model.arch=MMRealSR at model.scale=2 does not run on a 16, 24, 48 px input"),
])
def test_ids_the_zoo_does_not_train_are_refused_in_one_line(arch: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        spandrel_net(arch, 2, **SMALL.get(arch, {}))
    assert "\n" not in str(err.value)


def test_scales_a_class_does_not_give_and_zero_width_layers_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^model.arch=SwiftSRGAN at model.scale=3 turns a 16x16 input into "
                                          r"32x32 \(x2\): this scale is not supported$"):
        spandrel_net("SwiftSRGAN", 3, **SMALL["SwiftSRGAN"])
    with pytest.raises(ConfigError, match=r"^model.arch=MMRealSR: spandrel's class returns tuple, not one "
                                          r"image"):
        spandrel_net("MMRealSR", 4, **SMALL["MMRealSR"])
    # issue 31's example: crashed at step 1 with "weight of size [0, 12, 1, 1]"
    with pytest.raises(ConfigError, match=r"^model.arch=DAT with .*embed_dim=12.* has a layer of width "
                                          r"zero \(layers.0.blocks.0.attn.attns.0.pos.pos_proj.weight: "
                                          r"\(0, 2\)\): make the embedding wider or use fewer heads/splits$"):
        spandrel_net("DAT", 2, embed_dim=12, depth=[1], num_heads=[2], split_size=[2, 4])


def test_model_spandrel_config(tmp_path: Path) -> None:
    """``model=spandrel model.arch=<id>`` with options as ``+model.<key>=``: the class at its defaults plus
    those, the scale from data.scale; without model.arch it names the choice."""
    from pspl_lightning.cli.build import build
    from tests.conftest import compose_config

    cfg = compose_config("train", ["model=spandrel", "model.arch=SAFMN", "data.scale=3", "+model.dim=8",
                                   "+model.n_blocks=1"], tmp_path)
    net = build(cfg.model)
    assert type(net) is spandrel_class("SAFMN") and net.scale == 3
    assert net.hyperparameters["upscaling_factor"] == 3 and net.hyperparameters["dim"] == 8
    missing = compose_config("train", ["model=spandrel"], tmp_path)
    with pytest.raises(Exception, match="arch"):
        build(missing.model)


# --- docs/ZOO.md's table ---------------------------------------------------------------------------------

ROW = re.compile(r"^\| (\w+) \| (\w+|-) \| ([\d,]+|-) \| ([\d, ]+|-) \| (yes|no[^|]*) \| "
                 r"(yes|x[^|]*|no[^|]*) \| ([^|]+) \|$", re.M)


def doc_rows() -> dict[str, dict[str, str]]:
    """docs/ZOO.md's "Every spandrel architecture" table: {arch: {class, params, scales, trains,
    safetensors, onnx}}."""
    section = DOC.read_text().split("## Every spandrel architecture", 1)[1].split("\n## ", 1)[0]
    keys = ("class", "params", "scales", "trains", "safetensors", "onnx")
    if "## Every spandrel architecture" not in DOC.read_text():
        return {}
    return {m[0]: dict(zip(keys, (v.strip() for v in m[1:]), strict=True)) for m in ROW.findall(section)}


def computed_row(arch: str) -> dict[str, str]:
    """The doc row's columns this module computes (all but ONNX)."""
    if arch in REFUSED:
        return {"class": "-", "params": "-", "scales": "-",
                "trains": "no (refused)", "safetensors": "no (refused)"}
    scales = [s for s in SCALES if _builds(arch, s)]
    cls = spandrel_class(arch, 2).__name__ if scales and scales[0] == 2 else spandrel_class(arch, 4).__name__
    trains = "yes" if scales else "no (refused)"
    exports = [s for s in scales if (arch, s) != ("ESRGAN", 3)]
    safetensors = ("yes" if exports == scales else
                   f"x{', x'.join(map(str, exports))}") if scales else "no (refused)"
    return {"class": cls, "params": f"{params_at_x2(arch):,}" if 2 in scales else "-",
            "scales": ", ".join(map(str, scales)) or "-", "trains": trains, "safetensors": safetensors}


def test_the_doc_table_is_what_the_zoo_builds() -> None:
    """Each row's class, parameters at x2 (class defaults), scales, trains and .safetensors columns."""
    rows = doc_rows()
    for arch, row in rows.items():
        expected = computed_row(arch)
        assert {k: row[k] for k in expected} == expected, arch
    trains = [a for a, r in rows.items() if r["trains"] == "yes" and a not in VARIANTS]
    assert (len(trains), len(upscaling_ids())) == (24, 27)  # README, "Model zoo"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "trains any of 24 of the 27 spandrel ids that upscale" in readme


def main() -> None:
    """Print the table rows (ONNX column from the slow test's figures: fill by hand from its output)."""
    for arch in [*upscaling_ids(), *VARIANTS]:
        r = computed_row(arch)
        onnx = doc_rows().get(arch, {}).get("onnx", "?") if DOC.exists() else "?"
        print(f"| {arch} | {r['class']} | {r['params']} | {r['scales']} | {r['trains']} | "
              f"{r['safetensors']} | {onnx} |")


if __name__ == "__main__":
    sys.exit(main())


# --- the ONNX column (slow: one to four export children per id) ---------------------------------------

ONNX_SIZE = {"RealCUGAN": (24, 24)}  # the fixed size tried when a dynamic graph is refused; else 16x16


def onnx_outcome(arch: str, tmp_path: Path) -> str:
    """What pspl-export gives for the small ``arch`` at x2: ``dynamic (<exporter>)``, ``fixed size only
    (<exporter>)`` (the dynamic export refused, ``size=HxW`` works) or ``refused``; parity within 1e-4."""
    from pspl_lightning.export import export_model
    from tests.test_export import pspl_checkpoint

    options = ROUND_TRIP.get(arch, SMALL.get(arch, VARIANTS.get(arch)))
    torch.manual_seed(0)
    net = spandrel_net(arch, 2, **options).eval()
    model = {"_target_": "pspl_lightning.archs.zoo.spandrel_net", "arch": arch, **options}
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net, model, 2)
    h, w = ONNX_SIZE.get(arch, (16, 16))
    for size in (None, f"{h}x{w}"):
        out = tmp_path / f"{arch}-{size}.onnx"
        try:
            result = export_model(ckpt, out, size=size)
        except UserError as exc:
            assert "\n" not in str(exc) and not out.exists()
            print(f"{arch} size={size}: {exc}")
            continue
        assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
        exporter = "TorchScript" if "TorchScript" in result.lines[1] else "dynamo"
        print(f"{arch} size={size}: {exporter} {result.max_abs_diff:.2g}")
        return f"dynamic ({exporter})" if size is None else f"fixed size only ({exporter})"
    return "refused"


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in [*sorted(SMALL), *VARIANTS] if a != "MMRealSR"])
def test_the_onnx_column(arch: str, tmp_path: Path) -> None:
    if doc_rows()[arch]["onnx"] == "not measured":
        pytest.skip(f"{arch}: the ONNX column is not measured yet (run this test to fill it)")
    assert onnx_outcome(arch, tmp_path) == doc_rows()[arch]["onnx"]


def test_window_attention_networks_tile_with_an_overlap_from_their_window() -> None:
    """pspl-upscale's tiles of a SwinIR (no finite receptive radius: window attention) take the overlap its
    window and groups give, said in the log line, instead of a refusal; its tiles are closer to the untiled
    output than tiles without context (here within 1e-4: the overlap is a whole number of windows, so the
    tiles' windows are the image's)."""
    from pspl_lightning.inference.loading import LoadedNetwork
    from pspl_lightning.inference.tiling import receptive_radius, tiled_forward
    from pspl_lightning.inference.upscaler import Upscaler

    torch.manual_seed(0)
    net = spandrel_net("SwinIR", 2, **{**SMALL["SwinIR"], "depths": [2, 2], "num_heads": [2, 2]}).eval()
    assert receptive_radius(net) is None
    loaded = LoadedNetwork(net, 2, {"_target_": "pspl_lightning.archs.zoo.spandrel_net", "arch": "SwinIR"},
                           Path("swinir.safetensors"))
    upscaler = Upscaler(loaded, tile=16)
    assert upscaler.tile_overlap == 8 == 4 * 2
    assert upscaler.overlap_note == ("tile_overlap = 8 LR pixels, picked from the architecture (window 4 x 2 "
                                     "residual groups; window attention: tiles approximate the untiled "
                                     "output; tile=null runs whole images)")
    lr = torch.rand(1, 3, 40, 44, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        untiled = net(lr)
        tiled = upscaler(lr)
        bare = tiled_forward(net, lr, 2, 16, 0)
    assert tiled.shape == untiled.shape == (1, 3, 80, 88)
    err, bare_err = (tiled - untiled).abs().max().item(), (bare - untiled).abs().max().item()
    assert err < 1e-4 and bare_err > 1e-2  # measured: 4.9e-6 and 0.19


def onnx_summary(rows: dict[str, dict[str, str]]) -> str:
    """README's sentence listing docs/ZOO.md's ONNX column by outcome (ids in the table's order)."""
    groups = {"dynamic (dynamo)": "dynamic with torch's dynamo exporter",
              "dynamic (TorchScript)": "dynamic with the TorchScript-based one",
              "fixed size only (dynamo)": "fixed size only (`size=HxW`) with dynamo",
              "fixed size only (TorchScript)": "fixed size only with the TorchScript-based one",
              "refused": "refused", "not measured": "not measured yet"}
    parts = []
    for outcome, words in groups.items():
        ids = [a for a, r in rows.items() if r["onnx"] == outcome]
        if ids:
            parts.append(f"{words}: {', '.join(ids)}")
    return "; ".join(parts) + "."


def test_readme_onnx_paragraph_matches_the_table() -> None:
    """README's "Models in and out" lists each id under the outcome docs/ZOO.md's ONNX column gives it."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    rows = doc_rows()
    outcomes = ("dynamic (dynamo)", "dynamic (TorchScript)", "fixed size only (dynamo)",
                "fixed size only (TorchScript)", "refused", "no (refused)", "not measured")
    assert all(r["onnx"] in outcomes for r in rows.values())
    assert onnx_summary(rows) in readme


def test_upscaler_pads_a_network_that_does_not_pad_itself() -> None:
    """spandrel's DRCT needs a multiple of its window: pspl-upscale pads (reflect) and crops; a class that
    pads itself (SwinIR) runs as is."""
    import torch.nn.functional as F

    from pspl_lightning.inference.loading import LoadedNetwork
    from pspl_lightning.inference.upscaler import Upscaler

    torch.manual_seed(0)
    net = spandrel_net("DRCT", 2, **SMALL["DRCT"]).eval()
    lr = torch.rand(1, 3, 19, 23, generator=torch.Generator().manual_seed(5))
    with pytest.raises(RuntimeError):
        net(lr)
    upscaler = Upscaler(LoadedNetwork(net, 2, {"arch": "DRCT"}, Path("drct.safetensors")))
    assert upscaler.multiple == 4
    with torch.no_grad():
        expected = net(F.pad(lr, (0, 1, 0, 1), mode="reflect"))[..., :38, :46]
        assert torch.equal(upscaler(lr), expected)
    swinir = spandrel_net("SwinIR", 2, **SMALL["SwinIR"]).eval()
    assert Upscaler(LoadedNetwork(swinir, 2, {"arch": "SwinIR"}, Path("s.safetensors"))).multiple == 1
