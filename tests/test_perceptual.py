"""The perceptual loss: VGG19 layers conv1_2..conv5_4 before the ReLU, ImageNet normalisation, layer
weights and L1, checked against torchvision's own vgg19 run by hand on a state dict made here (no download);
where its weights come from, and the one-line refusal without any."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pspl_lightning.errors import ConfigError
from pspl_lightning.losses.perceptual import PerceptualLoss, vgg19_conv_indices, vgg19_features
from pspl_lightning.vgg_weights import VGG19_FILE, resolve_vgg19_weights

LAYERS = {2: 0.1, 7: 0.1, 16: 1.0, 25: 1.0, 34: 1.0}  # conv1_2, conv2_2, conv3_4, conv4_4, conv5_4


def _torchvision_models():
    """torchvision.models, the independent reference; skipped where torchvision does not import (the oldest
    stack's torch 2.13 CPU build fails on its compiled operators with a RuntimeError, not an ImportError)."""
    try:
        import torchvision.models
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"torchvision does not import here ({type(exc).__name__})")
    return torchvision.models


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """torchvision's VGG19 with random weights, and its state dict (features part) saved to a file."""
    models = _torchvision_models()
    torch.manual_seed(0)
    net = models.vgg19(weights=None).eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random.pth"
    torch.save({f"features.{k}": v for k, v in net.features.state_dict().items()}, path)
    return net, path


def by_hand(net: torch.nn.Module, sr: torch.Tensor, hr: torch.Tensor, layers: dict[int, float],
            normalise: bool = True) -> torch.Tensor:
    """sum_l w_l * mean|VGG_l(sr) - VGG_l(hr)|, each layer's output taken before the ReLU that follows."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats = []
    for img in (sr, hr):
        h, out = (img - mean) / std if normalise else img, {}
        for i, layer in enumerate(net.features[:35]):
            h = layer(h if not isinstance(layer, torch.nn.ReLU) else h.clone())
            if i in layers:
                assert isinstance(layer, torch.nn.Conv2d)  # before the ReLU
                out[i] = h.clone()
        feats.append(out)
    return sum(w * (feats[0][i] - feats[1][i]).abs().mean() for i, w in layers.items())


def test_layer_names_are_torchvision_feature_indices() -> None:
    names = vgg19_conv_indices()
    assert [names[k] for k in ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")] == [2, 7, 16, 25, 34]
    assert len(names) == 16 and names["conv1_1"] == 0


def test_loss_equals_torchvisions_vgg19_by_hand(reference: tuple[torch.nn.Module, Path]) -> None:
    net, path = reference
    torch.manual_seed(1)
    sr, hr = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    loss = PerceptualLoss(weights=str(path))
    with torch.no_grad():
        expected = by_hand(net, sr, hr, LAYERS)
        got = loss(sr, hr)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
        # the normalisation and the layer weights matter: without either the value differs
        assert abs(float(by_hand(net, sr, hr, LAYERS, normalise=False)) - float(got)) > 1e-3 * float(got)
        assert abs(float(by_hand(net, sr, hr, dict.fromkeys(LAYERS, 1.0))) - float(got)) > 1e-3 * float(got)
        only = PerceptualLoss(weights=str(path), layer_weights={"conv5_4": 2.0}, weight=0.5)
        torch.testing.assert_close(only(sr, hr), by_hand(net, sr, hr, {34: 1.0}), rtol=1e-5, atol=0)


def test_vgg_is_frozen_and_kept_out_of_the_state_dict(reference: tuple[torch.nn.Module, Path]) -> None:
    loss = PerceptualLoss(weights=str(reference[1]))
    assert list(loss.state_dict()) == [] and list(loss.parameters()) == []
    sr = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(sr, torch.rand(1, 3, 16, 16)).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.vgg.parameters())
    loss.to(torch.float64)  # .to() moves the hidden VGG too
    assert next(loss.vgg.parameters()).dtype == torch.float64


def test_weights_from_torchs_hub_cache_or_a_file_else_one_line(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError) as err:
        resolve_vgg19_weights(None)
    message = str(err.value)
    assert "\n" not in message and "loss.perceptual.weights=" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / VGG19_FILE) in message
    with pytest.raises(ConfigError, match="loss.perceptual.weights=/nowhere.pth: no such file"):
        resolve_vgg19_weights("/nowhere.pth")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / VGG19_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert resolve_vgg19_weights(None) == cached
    assert str(torch.hub.get_dir()) == str(tmp_path / "torch" / "hub")  # the folder torch itself uses


def test_a_file_that_is_not_vgg19_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="is not a VGG19 state dict"):
        PerceptualLoss(weights=str(bad))
    with pytest.raises(ConfigError, match="expected VGG19 layers"):
        PerceptualLoss(weights=str(bad), layer_weights={"conv6_1": 1.0})


def test_mse_criterion(reference: tuple[torch.nn.Module, Path]) -> None:
    net, path = reference
    sr, hr = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    loss = PerceptualLoss(weights=str(path), layer_weights={"conv1_2": 1.0}, criterion="mse")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        f = [net.features[:3]((x - mean) / std) for x in (sr, hr)]
        torch.testing.assert_close(loss(sr, hr), F.mse_loss(f[0], f[1]), rtol=1e-5, atol=0)


def test_vgg19_features_are_torchvisions_layer_for_layer() -> None:
    """The hand-built VGG19 (no torchvision needed) has torchvision's layers, names and shapes, so its
    ImageNet state dict loads; with the same weights both give the same features."""
    tv = _torchvision_models().vgg
    ours, theirs = vgg19_features(), tv.make_layers(tv.cfgs["E"], batch_norm=False)
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()}
    assert [(m.kernel_size, m.padding, m.stride) for m in ours if isinstance(m, torch.nn.Conv2d)] == [
        (m.kernel_size, m.padding, m.stride) for m in theirs if isinstance(m, torch.nn.Conv2d)]
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=0, atol=0)
