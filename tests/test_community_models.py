"""Models in: community weights files (made here with spandrel's own classes, random weights, in the wrappers
other trainers save) load through load_network, pspl-eval, pspl-upscale and init_from, architecture and
scale detected; EDSR-PyTorch's official EDSR/RCAN files convert exactly; mismatches are one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from pspl_lightning.archs import EDSR, RCAN, RDN
from pspl_lightning.cli.build import build_module
from pspl_lightning.cli.eval import evaluate
from pspl_lightning.cli.upscale import upscale
from pspl_lightning.data.io import read_image, write_png
from pspl_lightning.imresize import make_lr
from pspl_lightning.inference import WeightsError, load_network
from pspl_lightning.inference.warm_start import read_weights
from tests.conftest import TINY, compose_config
from tests.test_user_errors import _assert_one_line, _env

spandrel = pytest.importorskip("spandrel")
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.RCAN import RCAN as OfficialRCAN  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LR = torch.rand(1, 3, 23, 19, generator=torch.Generator().manual_seed(3))
COMPACT = {"num_feat": 8, "num_conv": 2}


def _compact(scale: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return Compact(upscale=scale, **COMPACT).eval()


def _save(path: Path, state: dict, wrapper: str) -> Path:
    """``state`` as another trainer saves it: BasicSR's params_ema, a DDP prefix, Lightning-style, or bare."""
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    payloads = {"params_ema": {"params_ema": state, "params": {k: v * 0 for k, v in state.items()}},
                "module": {f"module.{k}": v for k, v in state.items()},
                "state_dict": {"state_dict": state, "epoch": 3}, "bare": state}
    torch.save(payloads[wrapper], path)
    return path


@pytest.mark.parametrize("wrapper,suffix", [("params_ema", ".pth"), ("module", ".pt"),
                                            ("state_dict", ".ckpt"), ("bare", ".safetensors")])
def test_wrapped_community_files_load_with_architecture_and_scale(tmp_path: Path, wrapper: str,
                                                                  suffix: str) -> None:
    net = _compact()
    path = _save(tmp_path / f"compact{suffix}", net.state_dict(), wrapper)
    loaded = load_network(path)
    assert loaded.scale == 4 and type(loaded.net) is Compact
    assert loaded.describe() == "Compact(num_conv=2, num_feat=8) x4"
    with torch.no_grad():
        assert torch.equal(loaded.net(LR), net(LR))  # params_ema, not params (zeros), was read


def test_own_edsr_and_rdn_state_dicts_are_detected(tmp_path: Path) -> None:
    torch.manual_seed(0)
    for net, text in ((EDSR(3, n_resblocks=2, n_feats=8), "EDSR(n_feats=8, n_resblocks=2, res_scale=1.0) x3"),
                      (RDN(4, n_feats=8, n_blocks=2, n_layers=2, growth=4),
                       "RDN(growth=4, n_blocks=2, n_feats=8, n_layers=2) x4")):
        path = _save(tmp_path / "own.pth", net.eval().state_dict(), "bare")
        loaded = load_network(path)
        assert loaded.describe() == text
        with torch.no_grad():
            assert torch.equal(loaded.net(LR), net(LR))


def test_edsr_pytorch_official_edsr_converts_exactly(tmp_path: Path) -> None:
    """An official EDSR file works on [0, 255] (rgb_range 255, head.0): the reference is the same weights in
    an EDSR with rgb_range 255 fed 255 x, whose output / 255 the converted network must give."""
    torch.manual_seed(0)
    official = EDSR(2, n_resblocks=2, n_feats=8, rgb_range=255).eval()
    for name, p in official.named_parameters():
        if "mean" not in name:
            p.data.normal_(0, 0.2)
    state = {("head.0." + k[5:] if k.startswith("head.") else k): v for k, v in official.state_dict().items()}
    loaded = load_network(_save(tmp_path / "edsr_baseline_x2-official.pt", state, "bare"))
    assert loaded.describe() == "EDSR(n_feats=8, n_resblocks=2, res_scale=1.0) x2"
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(LR), official(LR * 255) / 255, rtol=1e-5, atol=1e-5)


def test_edsr_pytorch_official_rcan_becomes_the_project_rcan(tmp_path: Path, train_cfg) -> None:
    """spandrel's RCAN (EDSR-PyTorch's naming, [0, 255] inside) comes back as the project's RCAN with the
    same output; it fine-tunes with model=rcan through init_from."""
    torch.manual_seed(0)
    official = OfficialRCAN(scale=2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4).eval()
    for name, p in official.named_parameters():
        if "mean" not in name:
            p.data.normal_(0, 0.2)
    path = _save(tmp_path / "RCAN_BIX2.pt", official.state_dict(), "bare")
    loaded = load_network(path)
    assert type(loaded.net) is RCAN
    assert loaded.describe() == "RCAN(n_feats=8, n_resblocks=1, n_resgroups=1, reduction=4, res_scale=1.0) x2"
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(LR), official(LR.clone()), rtol=1e-5, atol=1e-5)
    cfg = train_cfg("model=rcan", "model.n_resgroups=1", "model.n_resblocks=1", "model.reduction=4",
                    f"init_from={path}")
    net = build_module(cfg).net
    for key, value in loaded.net.state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0)


def test_init_from_a_community_file_into_a_zoo_config(tmp_path: Path, train_cfg) -> None:
    """A BasicSR-style Compact x4 file warm-starts model=compact at x2: all but the scale-dependent last
    conv carry over, equal to the file's tensors."""
    source = _compact(4)
    path = _save(tmp_path / "compact_x4.pth", source.state_dict(), "params_ema")
    stored = read_weights(path)
    assert (stored.network, stored.scale) == ("SRVGGNetCompact", 4)  # spandrel's class for Compact
    cfg = train_cfg("model=compact", "model.num_feat=8", "model.num_conv=2", "model.act_type=prelu",
                    "data.scale=2", f"init_from={path}", tiny=False)
    net = build_module(cfg).net
    last = f"body.{len(net.body) - 1}."
    for key, value in net.state_dict().items():
        if key.startswith(last):
            assert value.shape != source.state_dict()[key].shape  # x2 conv: 3*4 outputs, the file's 3*16
        else:
            torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)


def test_pspl_eval_and_upscale_score_a_community_model(tmp_path: Path, sample_root: Path) -> None:
    net = _compact(2)
    path = _save(tmp_path / "4x_or_2x_compact.pth", net.state_dict(), "params_ema")
    bench = tmp_path / "benchmarks"
    hr = read_image(sample_root / "val" / "HR" / "chelsea.png")[:48, :64]
    write_png(bench / "Set5" / "HR" / "chelsea.png", hr)
    cfg = compose_config("eval", [f"ckpt={path}", f"benchmark_root={bench}", "sets=[Set5]", "device=cpu",
                                  "save_images=true"], tmp_path)
    summary = evaluate(cfg, console=Console(quiet=True))
    assert [(s.set, s.scale, s.images) for s in summary] == [("Set5", 2, 1)]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["checkpoints"]["x2"]["network"] == "Compact(num_conv=2, num_feat=8) x2"
    saved = read_image(tmp_path / "run" / "images" / "Set5" / "x2" / "chelsea.png")
    assert np.array_equal(saved, _sr8(net, make_lr(hr, 2)))  # the community network's own SR was scored

    photo = tmp_path / "photo.png"
    write_png(photo, hr[:20, :30])
    out = tmp_path / "sr"
    upscale(compose_config("upscale", [f"ckpt={path}", f"input={photo}", f"output={out}", "device=cpu",
                                       "tile=null"], tmp_path), console=Console(quiet=True))
    assert np.array_equal(read_image(out / "photo.png"), _sr8(net, hr[:20, :30]))


def _sr8(net: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    """8-bit SR of an 8-bit RGB image by ``net`` directly (the reference for what the tools wrote)."""
    with torch.no_grad():
        sr = net(torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float() / 255)
    return sr[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def test_mismatches_are_refused_naming_both(tmp_path: Path) -> None:
    path = _save(tmp_path / "compact.pth", _compact(4).state_dict(), "bare")
    with pytest.raises(WeightsError, match=r"is a x4 model \(detected by spandrel: Compact\(num_conv=2, "
                                           r"num_feat=8\) x4\), but scale 2 was asked"):
        load_network(path, scale=2)
    edsr = {"_target_": "pspl_lightning.archs.EDSR", "n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}
    with pytest.raises(WeightsError, match=r"holds Compact\(num_conv=2, num_feat=8\) x4 \(detected by "
                                           r"spandrel\), but the network asked for is EDSR\(n_feats=64"):
        load_network(path, model=edsr)


@pytest.fixture(scope="module")
def cli_mistakes(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> dict:
    """A community file given to pspl-eval, pspl-upscale and pspl-train with the wrong network or scale,
    each through its entry point's main() in a process of its own (tests/helpers/cli_runner.py)."""
    root = tmp_path_factory.mktemp("community_mistakes")
    path = _save(root / "compact_x4.pth", _compact(4).state_dict(), "params_ema")
    photo = root / "photo.png"
    write_png(photo, np.zeros((8, 8, 3), np.uint8))
    cases = {
        "eval_model": ("eval", [f"ckpt={path}", "model=edsr_baseline", f"benchmark_root={root}"]),
        "upscale_scale": ("upscale", [f"ckpt={path}", "scale=3", f"input={photo}", f"output={root / 'sr'}"]),
        "train_init_from": ("train", [*TINY, f"data.root={sample_root}", f"init_from={path}"]),
    }
    spec = {}
    for name, (entry, args) in cases.items():
        folder = root / name
        folder.mkdir()
        spec[name] = {"entry": entry, "args": args, "cwd": str(folder), "out": str(folder / "out"),
                      "env": _env(folder)}
    (root / "cases.json").write_text(json.dumps(spec))
    runner = subprocess.run([sys.executable, "-m", "tests.helpers.cli_runner", str(root / "cases.json")],
                            cwd=ROOT, env=_env(root), capture_output=True, text=True, timeout=600)
    assert runner.returncode == 0, runner.stdout[-2000:] + runner.stderr[-2000:]
    status = json.loads((root / "cases.json.status").read_text())
    return {name: subprocess.CompletedProcess(c["args"], status[name], Path(c["out"]).read_text(), "")
            for name, c in spec.items()}


def test_cli_wrong_network_or_scale_is_one_line(cli_mistakes: dict) -> None:
    _assert_one_line(cli_mistakes["eval_model"], "compact_x4.pth holds Compact(", "x4 (detected by spandrel)",
                     "the network asked for is EDSR(n_feats=64, n_resblocks=16")
    _assert_one_line(cli_mistakes["upscale_scale"], "is a x4 model (detected by spandrel: Compact(",
                     "but scale 3 was asked")
    _assert_one_line(cli_mistakes["train_init_from"], "init_from=", "is a checkpoint of SRVGGNetCompact",
                     "the network to start is EDSR")
