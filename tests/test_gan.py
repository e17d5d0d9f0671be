"""GAN training (recipe=realesrgan): adversarial losses by hand, the logged values, sigma following the
generator's steps, bit-exact resume of both networks, both optimizers and the EMA, the generator read back
by pspl-eval/-export/-upscale, and the config checks."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pspl_lightning.cli.checks import check_train_config
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError
from pspl_lightning.export import export_model
from pspl_lightning.gan_module import GANModule
from pspl_lightning.inference.loading import load_network
from pspl_lightning.losses.adversarial import GANLoss
from pspl_lightning.losses.perceptual import vgg19_features
from tests.conftest import TINY, compose_config
from tests.helpers.fault_probes import tensor_dicts_equal

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VGG19 state dict with random weights (the ImageNet file cannot be downloaded here)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random.pth"
    torch.save({f"features.{k}": v for k, v in vgg19_features().state_dict().items()}, path)
    return path


def gan_cfg(root: Path, sample_root: Path, vgg: Path, *overrides: str):
    """A GAN run small enough for seconds of CPU: TinySR x4, 32 px HR patches, a 4-feature discriminator."""
    base = [o for o in TINY if not o.startswith("model.")]
    return compose_config("train", [*base, f"data.root={sample_root}", "recipe=realesrgan", "model=tiny",
                                    "degradation=bicubic", f"loss.perceptual.weights={vgg}",
                                    "discriminator.num_feat=4", "trainer.val_check_interval=100",
                                    *overrides], root)


def test_gan_losses_by_hand() -> None:
    x = torch.tensor([[-2.0, 0.5], [1.0, 3.0]])
    vanilla, hinge = GANLoss("vanilla", 0.1), GANLoss("hinge", 0.5)
    torch.testing.assert_close(vanilla.generator(x), 0.1 * F.softplus(-x).mean())  # -log(sigmoid(x))
    torch.testing.assert_close(vanilla.discriminator(x, True), F.softplus(-x).mean())
    torch.testing.assert_close(vanilla.discriminator(x, False), F.softplus(x).mean())  # -log(1 - sigmoid)
    assert float(hinge.generator(x)) == pytest.approx(-0.5 * 0.625)
    assert float(hinge.discriminator(x, True)) == pytest.approx((3 + 0.5 + 0 + 0) / 4)
    assert float(hinge.discriminator(x, False)) == pytest.approx((0 + 1.5 + 2 + 4) / 4)
    with pytest.raises(ConfigError, match="loss.gan.type='wgan'"):
        GANLoss("wgan")


def _log(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "csv" / "metrics.csv").open()))


def _weights_and_optimizers(run: Path) -> tuple[dict, list]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"], ckpt["optimizer_states"]


def _flat(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _flat(val, f"{prefix}{i}.").items()}
    return {} if obj is None else {prefix: torch.as_tensor(obj)}


def test_gan_run_logs_paces_by_generator_steps_and_resumes_bit_exactly(sample_root: Path, tmp_path: Path,
                                                                       vgg_file: Path) -> None:
    # epochs of 3 steps (6 images x repeat 2 / batch 4): stopped at 2, resumed across the epoch end to 4;
    # the LR milestone at 3 checks both schedulers; PSPL's sigma reads the restored generator count
    common = ["loss=pspl", "trainer.max_steps=4", "schedule.lr_milestones=[3]", "module.ema_decay=0.5",
              "optimizer.lr=1e-3"]
    straight = gan_cfg(tmp_path / "a", sample_root, vgg_file, *common)
    assert train(straight)["global_step"] == 4  # max_steps counts generator steps
    run_a = Path(straight.paths.output_dir)
    rows = [r for r in _log(run_a) if r.get("train/loss_g")]
    for key in ("loss_g", "loss_d", "loss_pixel", "loss_perceptual", "loss_gan", "d_real", "d_fake"):
        assert all(r[f"train/{key}"] for r in rows), key
    total = sum(float(rows[0][f"train/loss_{k}"]) for k in ("pixel", "perceptual", "gan"))
    assert float(rows[0]["train/loss_g"]) == pytest.approx(total, rel=1e-5)
    assert float(rows[0]["train/loss_perceptual"]) > 0
    # sigma = alpha * (generator step + 1) / step_unit at generator steps 0, 1, 2, 3 (not 0, 2, 4, 6)
    unit = straight.loss.step_unit
    assert [float(r["pspl/sigma"]) for r in rows] == pytest.approx([(g + 1) / unit for g in range(4)])
    ckpt = torch.load(run_a / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["gan_steps"] == {"generator": 4, "discriminator": 4} and ckpt["global_step"] == 4
    assert [s["state"][0]["step"].item() for s in ckpt["optimizer_states"]] == [4.0, 4.0]  # Adam's own count
    assert [s["param_groups"][0]["lr"] for s in ckpt["optimizer_states"]] == pytest.approx([5e-4, 5e-4])
    assert not any(k.startswith("perceptual") for k in ckpt["state_dict"])  # VGG is not stored

    first = gan_cfg(tmp_path / "b", sample_root, vgg_file, *common,
                    "+callbacks.stop._target_=tests.helpers.probes.StopAt", "+callbacks.stop.step=2")
    assert train(first)["global_step"] == 2
    run = Path(first.paths.output_dir)
    assert train(gan_cfg(tmp_path / "c", sample_root, vgg_file, *common, f"resume={run}"))["global_step"] == 4
    weights, optimizers = _weights_and_optimizers(run)
    weights_a, optimizers_a = _weights_and_optimizers(run_a)
    assert {k.split(".")[0] for k in weights} == {"net", "net_ema", "net_d"}
    assert tensor_dicts_equal(weights, weights_a)  # generator, EMA, discriminator (spectral-norm u, v too)
    assert tensor_dicts_equal(_flat(optimizers), _flat(optimizers_a))  # both Adams: moments, steps, rates
    sigmas = [float(r["pspl/sigma"]) for r in _log(run) if r.get("pspl/sigma")]
    assert sigmas == pytest.approx([(g + 1) / unit for g in range(4)])

    # pspl-eval/-export/-upscale read the EMA generator by default, the raw one with ema=false
    last, state = run / "checkpoints" / "last.ckpt", weights
    ema, raw = load_network(last), load_network(last, ema=False)
    assert ema.info["weights"] == "ema" and raw.info["weights"] == "raw"
    for name, p in ema.net.state_dict().items():
        assert torch.equal(p, state[f"net_ema.{name}"])
        assert torch.equal(raw.net.state_dict()[name], state[f"net.{name}"])
    assert not tensor_dicts_equal(ema.net.state_dict(), raw.net.state_dict())
    export_model(last, tmp_path / "gan.pth")  # pspl-export: the EMA generator, in the project's format
    exported = torch.load(tmp_path / "gan.pth", weights_only=True)["state_dict"]
    assert tensor_dicts_equal({k: v.float() for k, v in exported.items()}, ema.net.state_dict())

    # in Python, the module comes back from its checkpoint alone: all three networks, the EMA for evaluation
    module = GANModule.load_from_checkpoint(last, map_location="cpu")
    restored = module.state_dict()
    assert tensor_dicts_equal({k: restored[k] for k in state}, state)
    assert module.eval_net is module.net_ema


def test_ema_is_basicsrs_arithmetic() -> None:
    net = nn.Linear(2, 2)
    module = GANModule(net=net, loss={"_target_": "torch.nn.L1Loss", "perceptual": None,
                                      "gan": {"_target_": "pspl_lightning.losses.adversarial.GANLoss"}},
                       scale=2, discriminator=nn.Conv2d(3, 1, 1), ema_decay=0.9)
    with torch.no_grad():  # a warm start (init_from) changes the generator after construction
        net.weight.mul_(3.0)
    module.on_fit_start()  # at generator step 0 the EMA starts as a copy of the (warm-started) generator
    assert torch.equal(module.net_ema.weight, net.weight) and torch.equal(module.net_ema.bias, net.bias)
    before = module.net_ema.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    module.sync_ema(0.9)
    torch.testing.assert_close(module.net_ema.weight, 0.9 * before + 0.1 * net.weight.detach())
    assert not any(p.requires_grad for p in module.net_ema.parameters())
    with pytest.raises(ConfigError, match="module.ema_decay=1.0"):
        GANModule(net=nn.Linear(2, 2), loss=dict(module.hparams.loss), scale=2,
                  discriminator=nn.Conv2d(3, 1, 1), ema_decay=1.0)


@pytest.mark.parametrize(("override", "match"), [
    ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches=2 is not supported"),
    ("trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val=1.0 is not supported"),
    ("callbacks=ema", "callbacks.ema would average the discriminator"),
    ("data.patch_size=36", "data.patch_size=36 must be divisible by 8"),
    ("trainer=ddp_cpu", "use trainer.strategy=ddp_find_unused_parameters_true"),
    ("loss.perceptual.weights=/nowhere/vgg.pth", "loss.perceptual.weights=/nowhere/vgg.pth: no such file"),
])
def test_config_checks(sample_root: Path, tmp_path: Path, vgg_file: Path, override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_train_config(gan_cfg(tmp_path, sample_root, vgg_file, override))


def test_no_vgg_weights_is_one_line_and_exit_2_before_any_work(tmp_path: Path) -> None:
    env = {**os.environ, "PSPL_ROOT": str(tmp_path), "TORCH_HOME": str(tmp_path / "torch"),
           "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "pspl_lightning.cli.train", "recipe=realesrgan",
                           "model=tiny", "logger=csv"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "loss.perceptual.weights=<VGG19 state dict file>" in lines[0]
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in lines[0]
    runs = tmp_path / "outputs" / "train" / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no run folder left


@pytest.mark.slow
def test_a_non_finite_generator_loss_stops_or_is_skipped(sample_root: Path, tmp_path: Path,
                                                         vgg_file: Path) -> None:
    from pspl_lightning.errors import TrainingDiverged

    nan = ["loss=l1", "loss._target_=tests.helpers.probes.NaNOnCall", "+loss.bad_call=1",
           "trainer.max_steps=3"]
    with pytest.raises(TrainingDiverged, match="non-finite training loss nan at step 1"):
        train(gan_cfg(tmp_path / "stop", sample_root, vgg_file, *nan))
    skip = gan_cfg(tmp_path / "skip", sample_root, vgg_file, *nan, "on_nonfinite=skip")
    assert train(skip)["global_step"] == 3
    ckpt = torch.load(Path(skip.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["gan_steps"] == {"generator": 3, "discriminator": 3}
    assert ckpt["optimizer_states"][0]["state"][0]["step"].item() == 2.0  # the skipped update left Adam alone
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_usm_sharpening_is_basicsrs_by_hand_with_scipy() -> None:
    from scipy.ndimage import convolve

    from pspl_lightning.losses.usm import USMSharp, opencv_gaussian_kernel1d

    k = opencv_gaussian_kernel1d(51).numpy()
    x = np.arange(51) - 25.0
    g = np.exp(-x**2 / (2 * 8.0**2))  # OpenCV's sigma for size 51: 0.3 * ((51 - 1) / 2 - 1) + 0.8 = 8
    np.testing.assert_allclose(k, g / g.sum(), rtol=1e-12)
    rng = np.random.default_rng(0)
    img = rng.random((1, 3, 40, 36)).astype(np.float32)
    img[..., :20, :] = 0.5  # a flat region: no sharpening where |img - blur| * 255 <= 10
    k2 = np.outer(k, k)

    def blur(a: np.ndarray) -> np.ndarray:  # reflect padding without repeating the edge = scipy's "mirror"
        return np.stack([convolve(c.astype(np.float64), k2, mode="mirror") for c in a[0]])[None]

    residual = img - blur(img)
    soft = blur((np.abs(residual) * 255 > 10).astype(np.float64))
    expected = soft * np.clip(img + 0.5 * residual, 0, 1) + (1 - soft) * img
    got = USMSharp()(torch.from_numpy(img)).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert not np.allclose(got, img, atol=1e-3)
