"""The documented defaults of the ``degradation`` config group (docs/DEGRADATIONS.md, the options table and
the ``realistic`` defaults table), in the composed configs and in the objects they instantiate."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pspl_lightning.degradations import Bicubic, BlurDown, NoisyBicubic, Realistic
from pspl_lightning.degradations.base import resolve_degradation
from tests.conftest import compose_config

# docs/DEGRADATIONS.md's options table: the parameters (config keys, defaults) of each option.
SIMPLE = {
    "bicubic": (Bicubic, {"seed": 0}),
    "bd": (BlurDown, {"kernel_size": 7, "sigma": 1.6, "seed": 0}),
    "dn": (NoisyBicubic, {"sigma": 30.0, "seed": 0}),
}

# docs/DEGRADATIONS.md's `realistic` table, written out row by row ("same" = stage 1's value).
MODES = ["area", "bilinear", "bicubic"]
KERNEL_PROBS = {"iso": 0.6, "aniso": 0.3, "motion": 0.1}
STAGE1 = {
    "enabled": True, "blur_prob": 1.0, "kernel_size": [7, 21], "kernel_probs": KERNEL_PROBS,
    "sigma": [0.2, 3.0], "motion_direction": [-1.0, 1.0],
    "resize_probs": {"up": 0.2, "down": 0.7, "keep": 0.1}, "resize_range": [0.15, 1.5], "resize_modes": MODES,
    "noise_prob": 1.0, "gaussian_noise_prob": 0.5,
    "gray_noise_prob": 0.4, "noise_sigma": [1.0, 30.0], "poisson_scale": [0.05, 3.0], "jpeg_prob": 1.0,
    "jpeg_quality": [30.0, 95.0],
}
STAGE2 = {
    **STAGE1, "blur_prob": 0.8, "sigma": [0.2, 1.5], "resize_probs": {"up": 0.3, "down": 0.4, "keep": 0.3},
    "resize_range": [0.3, 1.2], "noise_sigma": [1.0, 25.0], "poisson_scale": [0.05, 2.5],
}


def _compose(tmp_path: Path, name: str) -> dict[str, Any]:
    """``configs/degradation/<name>.yaml`` as ``pspl-train degradation=<name>`` composes it."""
    cfg = compose_config("train", [f"degradation={name}"], tmp_path)
    return OmegaConf.to_container(cfg.degradation, resolve=True)  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    """Tuples as lists and floats to 9 decimals (normalised probabilities), to compare with the table."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return round(value, 9) if isinstance(value, float) else value


@pytest.mark.parametrize("name", sorted(SIMPLE))
def test_simple_degradation_defaults(name: str, tmp_path: Path) -> None:
    """bicubic: seed only; bd: 7 x 7 kernel, sigma 1.6; dn: sigma 30 on 0..255, seed 0 -- in the yaml and
    in the object it makes for scale 3."""
    cls, documented = SIMPLE[name]
    node = _compose(tmp_path, name)
    assert node == {"_target_": f"{cls.__module__.rpartition('.')[0]}.{cls.__name__}", "_partial_": True,
                    **documented}
    deg = resolve_degradation(instantiate(node), 3)
    assert type(deg) is cls and deg.scale == 3
    for key, value in documented.items():
        assert getattr(deg, key) == value, key


def test_dn_sigma_is_30() -> None:
    """The options table's `sigma: 30` is also the constructor's default."""
    assert NoisyBicubic(2).sigma == 30.0 and BlurDown(2).sigma == 1.6 and BlurDown(2).kernel_size == 7


def test_realistic_yaml_is_the_documented_table(tmp_path: Path) -> None:
    node = _compose(tmp_path, "realistic")
    assert node == {"_target_": "pspl_lightning.degradations.Realistic", "_partial_": True, "seed": 0,
                    "stage1": STAGE1, "stage2": STAGE2, "final_modes": MODES}


def test_realistic_object_from_the_yaml_and_without_it(tmp_path: Path) -> None:
    """The object the yaml makes, and ``Realistic(scale)`` with no stage config, hold the table's values
    (the probabilities in the table already sum to 1, so normalising leaves them)."""
    from_yaml = resolve_degradation(instantiate(_compose(tmp_path, "realistic")), 4)
    for deg in (from_yaml, Realistic(4)):
        assert isinstance(deg, Realistic)
        assert _plain(asdict(deg.stage1)) == STAGE1
        assert _plain(asdict(deg.stage2)) == STAGE2
        assert list(deg.final_modes) == MODES


def test_the_table_differs_between_stages() -> None:
    """Guards the written-out table: stage 2 changes exactly the six rows the docs give it."""
    assert sorted(k for k in STAGE1 if STAGE1[k] != STAGE2[k]) == [
        "blur_prob", "noise_sigma", "poisson_scale", "resize_probs", "resize_range", "sigma"]
