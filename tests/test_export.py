"""Models out: pspl-export to .safetensors/.pth (read back by spandrel's ModelLoader with equal output) and
.onnx (onnxruntime against PyTorch on a size not used for the export), EMA or raw weights, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pspl_lightning.archs import EDSR, RCAN, RDN
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError, UserError
from pspl_lightning.export import export_model
from pspl_lightning.inference import load_network
from pspl_lightning.inference.loading import FORMAT
from tests.conftest import TINY, compose_config
from tests.test_user_errors import _assert_one_line, _env

spandrel = pytest.importorskip("spandrel")
safetensors = pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parents[1]
X = torch.rand(1, 3, 19, 23, generator=torch.Generator().manual_seed(5))  # not the ONNX trace size (32x32)


def pspl_checkpoint(path: Path, net: torch.nn.Module, model: dict, scale: int) -> Path:
    """A file laid out as pspl-train writes its checkpoints (net.* weights, the run config)."""
    config = {"model": {**model, "scale": scale}, "data": {"scale": scale},
              "paths": {"output_dir": "/somewhere/outputs/train/runs/2026-12-03_10-00-00_abc123"}}
    torch.save({"pspl_config": config, "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "global_step": 6}, path)
    return path


def _nets() -> dict[str, tuple[torch.nn.Module, dict]]:
    from pspl_lightning.archs.zoo import spandrel_net

    torch.manual_seed(0)
    return {
        "edsr": (EDSR(2, n_resblocks=2, n_feats=8),
                 {"_target_": "pspl_lightning.archs.EDSR", "n_resblocks": 2, "n_feats": 8, "res_scale": 1.0}),
        "rdn": (RDN(3, n_feats=8, n_blocks=2, n_layers=2, growth=4),
                {"_target_": "pspl_lightning.archs.RDN", "n_feats": 8, "n_blocks": 2, "n_layers": 2,
                 "growth": 4}),
        "rcan": (RCAN(4, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4),
                 {"_target_": "pspl_lightning.archs.RCAN", "n_resgroups": 1, "n_resblocks": 1, "n_feats": 8,
                  "reduction": 4, "res_scale": 1.0}),
        "compact": (spandrel_net("Compact", 2, num_feat=8, num_conv=2),
                    {"_target_": "pspl_lightning.archs.zoo.spandrel_net", "arch": "Compact", "num_feat": 8,
                     "num_conv": 2}),
    }


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("name", ["edsr", "rdn", "rcan", "compact"])
def test_weights_round_trip_through_spandrel(tmp_path: Path, name: str, suffix: str) -> None:
    net, model = _nets()[name]
    net.eval()
    scale = net.scale
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net, model, scale)
    out = export_model(ckpt, tmp_path / f"{name}{suffix}").output
    descriptor = spandrel.ModelLoader().load_from_file(out)
    assert descriptor.scale == scale
    with torch.no_grad():
        ref = net(X)
        got = descriptor.model.eval()(X.clone())  # spandrel's RCAN scales its input in place
        ours = load_network(out).net(X)
    if name == "rcan":  # written in EDSR-PyTorch's [0, 255] naming for spandrel's RCAN: rounding only
        assert type(descriptor.model).__module__.startswith("spandrel.")
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, ref) and torch.equal(ours, ref)
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(out), framework="pt") as f:
            meta, keys = f.metadata(), list(f.keys())  # noqa: SIM118
        assert meta["format"] == FORMAT and meta["scale"] == str(scale)
        assert meta["run_id"] == "2026-12-03_10-00-00_abc123" and meta["weights"] == "raw"
        assert json.loads(meta["model"])["_target_"] == model["_target_"]
        hyper = json.loads(meta["hyperparameters"])
        assert {k: v for k, v in model.items() if not k.startswith("_") and k != "arch"} == hyper
        assert meta["architecture"] == {"edsr": "EDSR", "rdn": "RDN", "rcan": "RCAN",
                                        "compact": "Compact"}[name]
    else:
        payload = torch.load(out, weights_only=True)
        keys = list(payload["state_dict"])
        assert all(v.is_contiguous() for v in payload["state_dict"].values())
    assert not any(k.startswith(("net.", "module.")) for k in keys)
    if name == "rcan":
        assert "head.0.weight" in keys and any(".conv_du." in k for k in keys)  # EDSR-PyTorch's names
    else:
        assert sorted(keys) == sorted(net.state_dict())


def test_edsr_and_rdn_are_registered_when_spandrel_is_imported() -> None:
    """``import pspl_lightning`` (done by every test) hooks the registration; a fresh interpreter that imports
    spandrel after pspl_lightning finds EDSR and RDN, and importing pspl_lightning alone loads no torch."""
    code = ("import sys, pspl_lightning; "
            "assert 'torch' not in sys.modules and 'spandrel' not in sys.modules; "
            "from spandrel import MAIN_REGISTRY; print('EDSR' in MAIN_REGISTRY, 'RDN' in MAIN_REGISTRY)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"]


def test_onnx_parity_for_edsr_baseline_tiny(tmp_path: Path) -> None:
    """Dynamic batch, height and width; metadata_props; the reported parity figure is what onnxruntime gives
    for the check's input (a batch of 2 at 27 x 41, seed 0), computed here independently; and against a
    network that differs from the file, the figure is that difference (the check cannot report 0 blindly)."""
    import onnx
    import onnxruntime as ort

    net, model = _nets()["edsr"]
    net.eval()
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net, model, 2)
    result = export_model(ckpt, tmp_path / "edsr.onnx")
    session = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"])
    check = torch.rand(2, 3, 27, 41, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        independent = float(abs(session.run(None, {"input": check.numpy()})[0] - net(check).numpy()).max())
    assert result.max_abs_diff == independent and independent < 1e-5
    assert result.lines[-1] == (f"onnxruntime vs PyTorch (fp32) on a batch of 2 41x27 inputs: largest "
                                f"difference {independent:.3g}")
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape[1] == 3 and all(isinstance(d, str) for d in inp.shape[::2])
    assert isinstance(inp.shape[3], str)
    for n, h, w in ((1, 19, 23), (3, 8, 40)):  # batch sizes and sizes the export never saw
        x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(h))
        got = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            ref = net(x).numpy()
        assert got.shape == (n, 3, 2 * h, 2 * w) and abs(got - ref).max() < 1e-5
    props = {p.key: p.value for p in onnx.load(str(result.output)).metadata_props}
    assert props == {"architecture": "EDSR", "scale": "2", "input_range": "RGB in [0, 1], NCHW",
                     "precision": "fp32", "input_layout": "NCHW, batch dynamic, height and width dynamic",
                     "exporter": "dynamo", "size": "dynamic"}
    assert "with torch.onnx.export(dynamo=True)" in result.lines[1]
    # the parity figure against a network whose weights differ from the file's (one tensor perturbed): above 0
    # and equal to onnxruntime's output minus that network's, computed here
    from pspl_lightning.export.onnx import onnx_difference

    other = EDSR(2, n_resblocks=2, n_feats=8)
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        other.body[0].body[0].weight.add_(0.05)
        perturbed = other.eval()(check).numpy()
    independent_other = float(abs(session.run(None, {"input": check.numpy()})[0] - perturbed).max())
    assert onnx_difference(result.output, other, check) == independent_other > 1e-3


def test_onnx_fixed_size(tmp_path: Path) -> None:
    """size=HxW: a graph of that height and width (batch dynamic), checked at that size; metadata says so."""
    import onnx
    import onnxruntime as ort

    net, model = _nets()["edsr"]
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net.eval(), model, 2)
    result = export_model(ckpt, tmp_path / "edsr.onnx", size="12x10")
    (inp,) = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"]).get_inputs()
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 12, 10]
    props = {p.key: p.value for p in onnx.load(str(result.output)).metadata_props}
    assert props["size"] == "12x10" and props["input_layout"] == "NCHW, batch dynamic, height 12, width 10"
    assert "Nx3x12x10 RGB in [0, 1] (fixed size, batch dynamic), output Nx3x24x20" in result.lines[1]
    assert result.lines[-1].startswith("onnxruntime vs PyTorch (fp32) on a batch of 2 10x12 inputs")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-5


@pytest.mark.slow
def test_onnx_half(tmp_path: Path) -> None:
    net, model = _nets()["edsr"]
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net.eval(), model, 2)
    result = export_model(ckpt, tmp_path / "edsr16.onnx", half=True)
    assert result.max_abs_diff is not None and 0 < result.max_abs_diff < 1e-2
    assert "fp16" in result.lines[1]


def test_output_mistakes(tmp_path: Path) -> None:
    net, model = _nets()["edsr"]
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net, model, 2)
    with pytest.raises(ConfigError, match=r"output=.*edsr.bin: expected a file name ending in .safetensors"):
        export_model(ckpt, tmp_path / "edsr.bin")
    with pytest.raises(ConfigError, match=r"^size=64x64 applies to .onnx outputs"):
        export_model(ckpt, tmp_path / "edsr.pth", size="64x64")
    with pytest.raises(ConfigError, match=r"^size=64: expected HxW in LR pixels, e.g. size=64x64$"):
        export_model(ckpt, tmp_path / "edsr.onnx", size="64")
    out = tmp_path / "edsr.pth"
    out.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"edsr.pth exists; not replaced \(pass overwrite=true\)"):
        export_model(ckpt, out)
    assert out.read_bytes() == b"mine"
    export_model(ckpt, out, overwrite=True)
    assert load_network(out).describe() == "EDSR(n_feats=8, n_resblocks=2, res_scale=1.0) x2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edsr.pth", "last.ckpt"]  # no temporary left


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_half_weights(tmp_path: Path, suffix: str) -> None:
    """half=true: fp16 tensors, about half the file; the check compares with the fp16-rounded network (0) and
    the file's output stays within fp16 rounding of the float32 network."""
    net, model = _nets()["edsr"]
    net.eval()
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net, model, 2)
    full = export_model(ckpt, tmp_path / f"full{suffix}").output
    half = export_model(ckpt, tmp_path / f"half{suffix}", half=True)
    assert half.max_abs_diff == 0 and "fp16 weights on a 41x27 input: 0" in half.lines[-1]
    descriptor = spandrel.ModelLoader().load_from_file(half.output)
    assert all(v.dtype == torch.float16 for v in descriptor.model.state_dict().values()
               if v.is_floating_point()) or True  # spandrel casts into its float32 model; the file is fp16
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        assert {v.dtype for v in load_file(str(half.output)).values()} == {torch.float16}
    else:
        stored = torch.load(half.output, weights_only=True)["state_dict"]
        assert {v.dtype for v in stored.values()} == {torch.float16}
    tensor_bytes = sum(v.numel() * 4 for v in net.state_dict().values())
    saved = full.stat().st_size - half.output.stat().st_size
    assert saved == pytest.approx(tensor_bytes / 2, abs=2048)
    with torch.no_grad():
        assert 0 < (load_network(half.output).net(X) - net(X)).abs().max() < 1e-2


def _perturbed_writer(monkeypatch: pytest.MonkeyPatch, key: str, delta: float) -> None:
    """write_weights writes the network with ``key`` shifted by ``delta`` (a file that differs from it)."""
    from pspl_lightning.export import weights

    original = weights.community_state

    def shifted(loaded):  # noqa: ANN001, ANN202
        state, naming = original(loaded)
        return {**state, key: state[key] + delta}, naming

    monkeypatch.setattr(weights, "community_state", shifted)


def test_a_file_that_differs_from_the_network_is_not_left(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The export's check reads the written file back: one tensor perturbed in it is refused in one line with
    the difference an independent computation gives, and neither the file nor a temporary remains (an
    existing file of that name is kept as it was)."""
    from hydra.utils import instantiate
    from safetensors.torch import load_file

    from pspl_lightning.export import CHECK_SIZE, check_weights_file, own_difference, spandrel_difference

    net, model = _nets()["compact"]
    net.eval()
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net, {**model, "scale": 2}, 2)
    _perturbed_writer(monkeypatch, "body.0.weight", 0.05)
    out = tmp_path / "compact.safetensors"
    out.write_bytes(b"mine")
    with pytest.raises(UserError, match=r"^Compact x2: the written file does not load back as the network "
                                        r"\(largest output difference [\d.e-]+ on a 41x27 input\); nothing "
                                        r"written$"):
        export_model(ckpt, out, overwrite=True)
    assert out.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compact.safetensors", "last.ckpt"]
    # the figures the check computes, against a written file with the perturbed tensor
    from pspl_lightning.export.weights import write_weights

    loaded = load_network(ckpt)
    written = tmp_path / "perturbed.safetensors"
    write_weights(loaded, written)
    copy = instantiate({k: v for k, v in model.items()}, scale=2).eval()
    copy.load_state_dict(load_file(str(written)))
    x = torch.rand(1, 3, *CHECK_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        independent = float((copy(x) - net(x)).abs().max())
    assert independent > 1e-3
    assert spandrel_difference(written, net) == ("Compact", 2, independent)
    assert own_difference(written, net) == independent
    with pytest.raises(UserError, match="nothing written"):
        check_weights_file(written, loaded)


def test_esrgan_x3_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    """spandrel reads an x3 ESRGAN file as x2 (it counts upsampling stages as powers of two): the export is
    refused in one line and leaves nothing; x2 and x4 export."""
    from pspl_lightning.archs.zoo import spandrel_net

    for scale in (3, 2):
        net = spandrel_net("ESRGAN", scale, num_filters=8, num_blocks=1).eval()
        model = {"_target_": "pspl_lightning.archs.zoo.spandrel_net", "arch": "ESRGAN", "num_filters": 8,
                 "num_blocks": 1}
        ckpt = pspl_checkpoint(tmp_path / f"x{scale}.ckpt", net, model, scale)
        out = tmp_path / f"esrgan_x{scale}.safetensors"
        if scale == 3:
            with pytest.raises(UserError, match=r"^ESRGAN x3: spandrel reads the written file as ESRGAN x2 "
                                                r"\(spandrel counts ESRGAN's upsampling stages as powers of "
                                                r"two\), so apps built on it would run another network; "
                                                r"nothing written"):
                export_model(ckpt, out)
            assert not out.exists() and not list(tmp_path.glob(".*"))
        else:
            assert export_model(ckpt, out).max_abs_diff == 0


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> Path:
    """last.ckpt of a tiny pspl-train run with callbacks=ema (Lightning's EMAWeightAveraging)."""
    out = tmp_path_factory.mktemp("ema_run")
    cfg = compose_config("train", [*TINY, f"data.root={sample_root}", "callbacks=ema",
                                   "callbacks.ema.decay=0.5", "trainer.max_steps=3",
                                   "trainer.val_check_interval=3"], out)
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def test_ema_weights_unless_ema_false(ema_run: Path, tmp_path: Path) -> None:
    stored = torch.load(ema_run, map_location="cpu", weights_only=True)
    averaged = {k[4:]: v for k, v in stored["state_dict"].items() if k.startswith("net.")}
    raw = {k[4:]: v for k, v in stored["current_model_state"].items() if k.startswith("net.")}
    assert not torch.equal(averaged["head.weight"], raw["head.weight"])
    cases = ((True, averaged, "the EMA weights"), (False, raw, "the raw weights (ema=false)"))
    for ema, expected, note in cases:
        result = export_model(ema_run, tmp_path / f"ema_{ema}.safetensors", ema=ema)
        assert note in result.lines[0]
        from safetensors.torch import load_file

        got = load_file(str(result.output))
        assert sorted(got) == sorted(expected)
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        meta = spandrel.ModelLoader().load_from_file(result.output)
        assert meta.architecture.id == "EDSR"


def test_cli_prints_the_checks_and_refuses_in_one_line(ema_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "edsr.safetensors"
    env = _env(tmp_path)
    cmd = [sys.executable, "-m", "pspl_lightning.cli.export", f"ckpt={ema_run}", f"output={out}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "spandrel's ModelLoader reads it as EDSR x2; largest difference from PyTorch" in done.stdout
    assert done.stdout.rstrip().endswith(": 0")
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    _assert_one_line(again, "edsr.safetensors exists; not replaced (pass overwrite=true)")


def test_export_config_keys() -> None:
    cfg = OmegaConf.load(ROOT / "configs" / "export.yaml")
    assert (cfg.ema, cfg.half, cfg.overwrite) == (True, False, False)


def test_an_architecture_that_cannot_export_with_dynamic_shapes_is_refused(tmp_path: Path) -> None:
    """TinySR's bicubic skip caches its resize matrices per input size: neither exporter gives a graph that
    holds at another size, so the export stops with one line naming the architecture and both exporters'
    failures, writing nothing."""
    from pspl_lightning.archs import TinySR

    torch.manual_seed(0)
    net = TinySR(2, n_feats=8, n_layers=1)
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net, {"_target_": "pspl_lightning.archs.TinySR",
                                                         "n_feats": 8, "n_layers": 1}, 2)
    with pytest.raises(UserError, match=r"^TinySR cannot be exported to ONNX with dynamic height and width "
                                        r"\(dynamo: [^\n\x1b]*; torchscript: [^\n\x1b]*\); export "
                                        r".safetensors or .pth instead, or a fixed-size graph with "
                                        r"size=HxW$"):
        export_model(ckpt, tmp_path / "tiny.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def _zoo_checkpoint(name: str, tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A pspl-train-style checkpoint of the zoo config ``name`` at x2 with test_zoo's small widths."""
    from hydra.utils import instantiate

    from tests.test_zoo import SMALL, _model_cfg

    model = OmegaConf.to_container(_model_cfg(name, 2, tmp_path, *SMALL[name]), resolve=True)
    torch.manual_seed(0)
    net = instantiate(model).eval()
    return pspl_checkpoint(tmp_path / "last.ckpt", net, model, 2), net


def _named_configs() -> list[str]:
    from tests.test_zoo import NAMED

    return NAMED


ZOO_CONFIGS = _named_configs()


@pytest.mark.parametrize("name", ZOO_CONFIGS)
def test_every_zoo_config_round_trips_through_spandrel(name: str, tmp_path: Path) -> None:
    """At test_zoo's small widths; atd_light keeps its official category size 128, which spandrel's loader
    reads as 256 (a state dict does not hold it): its export is refused, naming it, and nothing written."""
    ckpt, net = _zoo_checkpoint(name, tmp_path)
    if name == "atd_light":
        with pytest.raises(UserError, match=r"^ATD x2: .*\(it reads category_size=256 for 128\); nothing "
                                            r"written$"):
            export_model(ckpt, tmp_path / f"{name}.safetensors")
        assert not (tmp_path / f"{name}.safetensors").exists()
        return
    out = export_model(ckpt, tmp_path / f"{name}.safetensors").output
    descriptor = spandrel.ModelLoader().load_from_file(out)
    assert type(descriptor.model) is type(net) and descriptor.scale == 2
    x = X[..., :16, :16] if name == "drct_light" else X  # DRCT does not pad: a multiple of its window
    with torch.no_grad():
        assert torch.equal(descriptor.model.eval()(x), net(x))
        assert torch.equal(load_network(out).net(x), net(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_CONFIGS)
def test_shipped_configs_export_to_safetensors(name: str, tmp_path: Path) -> None:
    """The shipped configs at full size: each .safetensors export reads back through spandrel with output
    equal to the network's (0), except atd_light, refused as above (README, "Models in and out")."""
    from hydra.utils import instantiate

    from tests.test_zoo import _model_cfg

    model = OmegaConf.to_container(_model_cfg(name, 2, tmp_path), resolve=True)
    torch.manual_seed(0)
    net = instantiate(model).eval()
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net, model, 2)
    if name == "atd_light":
        with pytest.raises(UserError, match=r"\(it reads category_size=256 for 128\); nothing written$"):
            export_model(ckpt, tmp_path / f"{name}.safetensors")
        return
    assert export_model(ckpt, tmp_path / f"{name}.safetensors").max_abs_diff == 0


@pytest.mark.slow
def test_shipped_dat_light_onnx(tmp_path: Path) -> None:
    """dat_light at its shipped config (split sizes 8 x 32; issue 31: its dynamic export was refused after
    195 s): the export gives a graph within 1e-4 of PyTorch or a one-line refusal naming DAT, never a
    traceback or a file that was not checked (README, "Models in and out", claims no more)."""
    from hydra.utils import instantiate

    from tests.test_zoo import _model_cfg

    model = OmegaConf.to_container(_model_cfg("dat_light", 2, tmp_path), resolve=True)
    torch.manual_seed(0)
    net = instantiate(model).eval()
    ckpt = pspl_checkpoint(tmp_path / "last.ckpt", net, model, 2)
    for size in (None, "64x64"):
        out = tmp_path / f"dat-{size}.onnx"
        try:
            result = export_model(ckpt, out, size=size)
        except UserError as exc:
            assert str(exc).startswith("DAT cannot be exported to ONNX") and "\n" not in str(exc)
            assert not out.exists()
            continue
        assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
