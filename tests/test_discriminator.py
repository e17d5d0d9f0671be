"""UNetDiscriminatorSN: Real-ESRGAN's published parameter names and shapes, and its forward pass against a
hand-written functional one that applies the spectral norm from the stored vectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pspl_lightning.archs.discriminator import UNetDiscriminatorSN
from pspl_lightning.errors import ConfigError
from pspl_lightning.gan_module import load_discriminator


def published_keys(f: int = 64) -> dict[str, tuple[int, ...]]:
    """The state-dict layout of BasicSR's UNetDiscriminatorSN (RealESRGAN_x4plus_netD.pth at f = 64)."""
    keys = {"conv0.weight": (f, 3, 3, 3), "conv0.bias": (f,)}
    convs = {1: (f * 2, f, 4), 2: (f * 4, f * 2, 4), 3: (f * 8, f * 4, 4), 4: (f * 4, f * 8, 3),
             5: (f * 2, f * 4, 3), 6: (f, f * 2, 3), 7: (f, f, 3), 8: (f, f, 3)}
    for i, (out, inp, k) in convs.items():
        keys |= {f"conv{i}.weight_orig": (out, inp, k, k), f"conv{i}.weight_u": (out,),
                 f"conv{i}.weight_v": (inp * k * k,)}
    return keys | {"conv9.weight": (1, f, 3, 3), "conv9.bias": (1,)}


def test_parameter_names_and_shapes_are_real_esrgans() -> None:
    state = UNetDiscriminatorSN(3, 64).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == published_keys(64)
    community = {k: torch.randn(s) for k, s in published_keys(64).items()}  # a file in that layout loads
    UNetDiscriminatorSN(3, 64).load_state_dict(community, strict=True)


def _sn(state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The spectrally normalised weight in eval mode: W / (u^T W v) with the stored u, v."""
    w = state[f"{name}.weight_orig"]
    sigma = torch.dot(state[f"{name}.weight_u"], w.flatten(1) @ state[f"{name}.weight_v"])
    return w / sigma


def test_forward_matches_a_functional_reimplementation() -> None:
    torch.manual_seed(0)
    net = UNetDiscriminatorSN(3, 4).eval()
    for _ in range(3):  # a few power iterations in train mode, so that u and v are not their initial draw
        net.train()(torch.rand(1, 3, 16, 16))
    net.eval()
    s = {k: v.detach().clone() for k, v in net.state_dict().items()}
    x = torch.rand(2, 3, 24, 32)

    def act(t: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(t, 0.2)

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

    x0 = act(F.conv2d(x, s["conv0.weight"], s["conv0.bias"], padding=1))
    x1 = act(F.conv2d(x0, _sn(s, "conv1"), stride=2, padding=1))
    x2 = act(F.conv2d(x1, _sn(s, "conv2"), stride=2, padding=1))
    x3 = act(F.conv2d(x2, _sn(s, "conv3"), stride=2, padding=1))
    x4 = act(F.conv2d(up(x3), _sn(s, "conv4"), padding=1)) + x2
    x5 = act(F.conv2d(up(x4), _sn(s, "conv5"), padding=1)) + x1
    x6 = act(F.conv2d(up(x5), _sn(s, "conv6"), padding=1)) + x0
    out = act(F.conv2d(x6, _sn(s, "conv7"), padding=1))
    out = act(F.conv2d(out, _sn(s, "conv8"), padding=1))
    expected = F.conv2d(out, s["conv9.weight"], s["conv9.bias"], padding=1)
    with torch.no_grad():
        got = net(x)
    assert got.shape == (2, 1, 24, 32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_sides_not_divisible_by_8_and_bad_width_are_refused() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        UNetDiscriminatorSN(3, 4)(torch.rand(1, 3, 20, 16))
    with pytest.raises(ConfigError, match="discriminator.num_feat"):
        UNetDiscriminatorSN(3, 0)


def test_a_community_discriminator_file_loads(tmp_path: Path) -> None:
    """A BasicSR-style file ({"params": state dict}) in the published layout: init_discriminator_from."""
    state = {k: torch.randn(s) for k, s in published_keys(8).items()}
    path = tmp_path / "netD.pth"
    torch.save({"params": state}, path)
    net = UNetDiscriminatorSN(3, 8)
    load_discriminator(net, path)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ConfigError, match="does not fit UNetDiscriminatorSN"):
        load_discriminator(UNetDiscriminatorSN(3, 16), path)
    with pytest.raises(ConfigError, match="init_discriminator_from=/nowhere.pth: no such file"):
        load_discriminator(net, "/nowhere.pth")
