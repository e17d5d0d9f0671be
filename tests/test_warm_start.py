"""Warm start (init_from): x3/x4 from x2 weights, every file format, and clear errors."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from pspl_lightning.archs import EDSR, RCAN, VDSR, MSRResNet
from pspl_lightning.cli.build import build_module
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError
from pspl_lightning.inference.loading import FORMAT
from pspl_lightning.inference.warm_start import load_matching_weights, read_weights

SMALL = {"n_resblocks": 1, "n_feats": 8}


@pytest.fixture
def x2_checkpoint(train_cfg: Callable[..., DictConfig]) -> Path:
    """A Lightning checkpoint of a tiny EDSR-baseline trained at x2 through the real config."""
    cfg = train_cfg("data.scale=2", "trainer.max_steps=3", "trainer.val_check_interval=3")
    train(cfg)
    kept = Path(cfg.paths.output_dir).parent / "x2.ckpt"  # out of the run folder a later run will reuse
    shutil.copy(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", kept)
    return kept


def test_x3_from_x2_lightning_checkpoint(x2_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = torch.load(x2_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    torch.manual_seed(1)
    net = EDSR(3, **SMALL)
    tail_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("tail.")}
    with caplog.at_level(logging.INFO, logger="pspl_lightning.inference.warm_start"):
        report = load_matching_weights(net, x2_checkpoint)
    state = net.state_dict()
    body_keys = [k for k in state if not k.startswith("tail.")]
    assert report.source_scale == 2 and report.target_scale == 3
    assert sorted(report.loaded) == sorted(body_keys)
    for key in body_keys:
        torch.testing.assert_close(state[key], source[f"net.{key}"], rtol=0, atol=0)
    # the whole upsampler is skipped, including the final conv whose shape would have matched
    assert set(report.skipped) == {k.removeprefix("net.") for k in source if k.startswith("net.tail.")}
    assert report.skipped["tail.1.weight"] == "scale-dependent, x2 -> x3"
    assert sorted(report.not_in_file) == sorted(tail_before)
    for key, value in tail_before.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    message = caplog.text
    assert f"Warm start from {x2_checkpoint} (x2 -> x3): loaded {len(body_keys)} tensors" in message
    assert "head.weight" in message and "tail.0.0.weight (scale-dependent, x2 -> x3)" in message


def test_same_scale_loads_everything(x2_checkpoint: Path) -> None:
    source = torch.load(x2_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net = EDSR(2, **SMALL)
    report = load_matching_weights(net, x2_checkpoint)
    assert report.skipped == {} and report.not_in_file == []
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, source[f"net.{key}"], rtol=0, atol=0)


def test_x3_run_from_x2_through_the_config(x2_checkpoint: Path, train_cfg: Callable[..., DictConfig]) -> None:
    """init_from in the config: the x3 network starts from the x2 body, then trains."""
    source = torch.load(x2_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    cfg = train_cfg("data.scale=3", "data.patch_size=36", f"init_from={x2_checkpoint}",
                    "trainer.max_steps=2", "trainer.val_check_interval=2", "schedule.lr_milestones=[]")
    with open_dict(cfg):
        cfg.paths.output_dir = str(x2_checkpoint.parent / "run_x3")
    net = build_module(cfg).net
    torch.testing.assert_close(net.head.weight, source["net.head.weight"], rtol=0, atol=0)
    assert net.tail[0][0].weight.shape[0] == 9 * 8
    metrics = train(cfg)
    assert metrics["val/psnr_y"] > 10.0


def _bare_x2_state(tmp_path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    torch.manual_seed(0)
    state = EDSR(2, **SMALL).state_dict()
    path = tmp_path / "edsr_x2.pth"
    torch.save(state, path)
    return state, path


def test_bare_state_dict_loads_by_shape(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bare state dict of a network spandrel does not know (MSRResNet) records no scale: x2 -> x4 keeps
    every tensor whose shape matches (the first x2 stage of the x4 upsampler and the HR convs), unless the
    caller names the source scale."""
    torch.manual_seed(0)
    state = MSRResNet(2, **SMALL).state_dict()
    path = tmp_path / "msrresnet_x2.pth"
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="pspl_lightning.inference.warm_start"):
        report = load_matching_weights(MSRResNet(4, **SMALL), path)
    assert report.source_scale is None
    assert {"tail.0.0.weight", "tail.1.weight", "tail.3.weight"} <= set(report.loaded)
    assert report.not_in_file == ["tail.0.3.weight", "tail.0.3.bias"]
    assert "records no scale" in caplog.text

    report = load_matching_weights(MSRResNet(4, **SMALL), path, source_scale=2)
    assert sorted(report.skipped) == sorted(k for k in state if k.startswith("tail."))
    assert not any(k.startswith("tail.") for k in report.loaded)


def test_bare_edsr_state_dict_has_its_scale_detected(tmp_path: Path) -> None:
    """spandrel (the zoo extra) recognises a bare EDSR state dict and its scale: x2 -> x4 skips the tail."""
    pytest.importorskip("spandrel")
    edsr_state, edsr_path = _bare_x2_state(tmp_path)
    report = load_matching_weights(EDSR(4, **SMALL), edsr_path)
    assert report.source_scale == 2
    assert sorted(report.skipped) == sorted(k for k in edsr_state if k.startswith("tail."))


def test_exported_weights_file(tmp_path: Path) -> None:
    """The export format of pspl_lightning.inference (model config and scale recorded)."""
    state, _ = _bare_x2_state(tmp_path)
    path = tmp_path / "exported.pth"
    model = {"_target_": "pspl_lightning.archs.EDSR", "n_resblocks": 1, "n_feats": 8, "res_scale": 1.0}
    torch.save({"format": FORMAT, "model": model, "scale": 2, "state_dict": state}, path)
    stored = read_weights(path)
    assert (stored.scale, stored.network) == (2, "EDSR") and sorted(stored.state) == sorted(state)
    report = load_matching_weights(EDSR(3, **SMALL), path)
    assert report.source_scale == 2
    assert sorted(report.skipped) == sorted(k for k in state if k.startswith("tail."))


def test_basicsr_params_ema_of_a_compiled_network(tmp_path: Path) -> None:
    """BasicSR files keep the weights under params_ema; a compiled network adds ``_orig_mod.``."""
    state, _ = _bare_x2_state(tmp_path)
    path = tmp_path / "basicsr.pth"
    torch.save({"params_ema": {f"_orig_mod.{k}": v for k, v in state.items()}}, path)
    net = EDSR(3, **SMALL)
    report = load_matching_weights(net, path, source_scale=2)
    assert report.source_scale == 2 and len(report.loaded) == len(state) - 4
    torch.testing.assert_close(net.head.weight, state["head.weight"], rtol=0, atol=0)


def test_scale_free_networks_transfer_everything(tmp_path: Path) -> None:
    """VDSR upscales before the network: all of its weights carry over between scales."""
    src = VDSR(2, n_layers=3, n_feats=8)
    path = tmp_path / "vdsr.pth"
    torch.save({"state_dict": src.state_dict(), "scale": 2}, path)
    net = VDSR(4, n_layers=3, n_feats=8)
    report = load_matching_weights(net, path)
    assert report.skipped == {} and len(report.loaded) == len(src.state_dict())
    torch.testing.assert_close(net.body[0].weight, src.body[0].weight, rtol=0, atol=0)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(ConfigError, match=f"no such checkpoint or weights file: {missing}"):
        load_matching_weights(EDSR(2, **SMALL), missing)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=f"init_from: {text} cannot be read: it is a text file, not a"):
        load_matching_weights(EDSR(2, **SMALL), text)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": EDSR(2, **SMALL).state_dict(), "path": tmp_path}, unsafe)  # a pathlib object
    with pytest.raises(ValueError, match=f"init_from: {unsafe} cannot be read as a weights-only"):
        load_matching_weights(EDSR(2, **SMALL), unsafe)
    other = tmp_path / "list.pth"
    torch.save({"epoch": 3, "lr": 0.1}, other)
    with pytest.raises(ValueError, match=f"init_from: {other} holds no tensors"):
        load_matching_weights(EDSR(2, **SMALL), other)


def test_checkpoint_of_another_network_is_refused(tmp_path: Path) -> None:
    """A checkpoint records its network: RCAN weights are not loaded into EDSR, even where names match."""
    rcan = RCAN(2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4)
    path = tmp_path / "rcan.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in rcan.state_dict().items()},
                "pspl_config": {"model": {"_target_": "pspl_lightning.archs.RCAN", "scale": 2}}}, path)
    with pytest.raises(ValueError, match="is a checkpoint of RCAN; the network to start is EDSR"):
        load_matching_weights(EDSR(2, **SMALL), path)


def test_bare_weights_of_another_network_are_refused(tmp_path: Path) -> None:
    """Without a record, the share of matching tensors decides: 14 of RCAN's 30 tensors happen to match EDSR's
    names and shapes (head, mean shifts, tail, two convs), the block tensors do not: refuse, load nothing."""
    path = tmp_path / "rcan.pth"
    torch.save(RCAN(2, n_resgroups=1, n_resblocks=2, n_feats=8, reduction=4).state_dict(), path)
    net = EDSR(2, **SMALL)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"only 14 tensors match EDSR by name and shape \(of 16 transferable "
                                         r"in the network and 30 in the file.* Nothing was loaded"):
        load_matching_weights(net, path)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_a_checkpoint_that_records_model_init_from_still_loads_and_resumes(
        x2_checkpoint: Path, train_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """Runs before init_from became a top-level key recorded it inside the model config (the module's
    ``net`` and the run's ``model``): loading that checkpoint, reading its weights and continuing its folder
    all still work, the key ignored (its weights are in the checkpoint already)."""
    from pspl_lightning.cli.run_folder import check_same_run
    from pspl_lightning.inference.loading import load_network
    from pspl_lightning.module import SRModule

    old = torch.load(x2_checkpoint, map_location="cpu", weights_only=True)
    old["hyper_parameters"]["net"]["init_from"] = "/runs/x2/last.ckpt"
    old["pspl_config"]["model"]["init_from"] = "/runs/x2/last.ckpt"
    path = tmp_path / "old.ckpt"
    torch.save(old, path)

    module = SRModule.load_from_checkpoint(path, map_location="cpu")
    assert "init_from" not in module.hparams.net
    net_weights = {k: v for k, v in old["state_dict"].items() if k.startswith("net.")}
    assert all(torch.equal(module.state_dict()[k], v) for k, v in net_weights.items())
    assert load_network(path).describe() == "EDSR(n_feats=8, n_resblocks=1, res_scale=1.0) x2"
    check_same_run(train_cfg("data.scale=2"), path)  # a requeued job of that run continues it
    with pytest.raises(ConfigError, match=r"holds a checkpoint of another run \(model was"):
        check_same_run(train_cfg("data.scale=2", "model.n_feats=16"), path)
