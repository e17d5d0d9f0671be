"""docs/DEVELOPING.md: the files it names exist, and a network written to its contract outside the package
trains through ``pspl-train`` and warm-starts across scales without any project file naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from pspl_lightning.archs.common import Upsampler, check_scale
from pspl_lightning.cli.build import build_module
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError
from tests.helpers.checkpoints import network_from_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEVELOPING = (ROOT / "docs" / "DEVELOPING.md").read_text()


def test_every_file_developing_names_exists() -> None:
    paths = set(re.findall(r"`((?:pspl_lightning|configs|tests|docs)/[\w/.]+)`", DEVELOPING))
    assert len(paths) > 20 and "pspl_lightning/losses/paced.py" in paths
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []


class TwoConvSR(nn.Module):
    """A network no project file names, written as DEVELOPING.md says: ``scale`` first, ``check_scale``,
    ``self.scale`` and ``scale_dependent``."""

    scale_dependent = ("tail.",)

    def __init__(self, scale: int, n_feats: int = 8, n_layers: int = 1) -> None:
        super().__init__()
        check_scale(scale, "TwoConvSR")
        self.scale = scale
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, 3, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(torch.relu(self.head(x)))


def test_a_network_from_outside_the_package_trains_and_warm_starts(train_cfg) -> None:
    """``model=tiny model._target_=<this module>.TwoConvSR`` (tiny's options: n_feats, n_layers) trains x2;
    its checkpoint starts an x3 run through ``init_from``, the scale-dependent tail left out."""
    small = ["model=tiny", f"model._target_={__name__}.TwoConvSR", "model.n_feats=8", "data.patch_size=24",
             "data.batch_size=2", "trainer.max_steps=2", "trainer.val_check_interval=2", "logger=csv",
             "schedule.lr_milestones=[]", "callbacks.progress_bar=null"]
    cfg = train_cfg(*small, tiny=False)
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    x2 = network_from_checkpoint(ckpt)
    assert type(x2).__name__ == "TwoConvSR" and x2.scale == 2 and x2(torch.rand(1, 3, 8, 8)).shape[-1] == 16

    x3_cfg = train_cfg(*small, "data.scale=3", f"init_from={ckpt}", tiny=False)
    x3 = build_module(x3_cfg).plain_net
    assert x3.scale == 3 and torch.equal(x3.head.weight, x2.head.weight)  # carried over
    assert x3.tail[0][0].weight.shape[0] == 9 * 8  # the x3 upsampler: left at its initialisation


def test_check_scale_refuses_what_the_upsampler_cannot_build() -> None:
    try:
        TwoConvSR(5)
    except ConfigError as err:
        assert "TwoConvSR supports model.scale 2, 3 or 4, got 5" in str(err)
    else:
        raise AssertionError("scale 5 was accepted")


MY_PACKAGE = {
    "__init__.py": "",
    "nets.py": '''
import pytest
import torch
from torch import nn

from pspl_lightning.archs.common import Upsampler, check_scale


class MyNet(nn.Module):
    scale_dependent = ("tail.",)

    def __init__(self, scale: int, n_feats: int = 8) -> None:
        super().__init__()
        check_scale(scale, "MyNet")
        self.scale = scale
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, 3, 3, padding=1))

    def forward(self, x):
        return self.tail(torch.relu(self.head(x)))
''',
    "losses.py": '''
import pytest
import torch
from torch import nn


class MyLoss(nn.Module):
    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, sr, hr):
        return torch.sqrt((sr - hr) ** 2 + self.eps**2).mean()
''',
}


def _documented_commands() -> list[str]:
    """The ``pspl-train`` lines of DEVELOPING.md's bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", DEVELOPING, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.startswith("pspl-train")]


def test_every_command_of_developing_trains_as_written(tmp_path: Path, sample_root: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command, split as bash splits it, composes and trains (debug=fast) with a package ``mypkg``
    outside the project; the run records the user's class and only the options given."""
    import shlex

    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    for name, text in MY_PACKAGE.items():
        (tmp_path / "pkg" / "mypkg").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / "mypkg" / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    commands = _documented_commands()
    assert len(commands) == 2, commands
    targets = []
    for i, command in enumerate(commands):
        root = tmp_path / f"cmd{i}"
        (root / "data").mkdir(parents=True)
        (root / "data" / "sample").symlink_to(sample_root)  # the sample set where the default config looks
        args = shlex.split(command)
        assert args[0] == "pspl-train"
        cfg = compose_config("train", args[1:], root)
        metrics = train(cfg)
        assert metrics["global_step"] == 4  # debug=fast
        saved = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
        targets.append(OmegaConf.create(saved["pspl_config"]))
    net, loss = targets[0].model, targets[1].loss
    assert dict(net) == {"_target_": "mypkg.nets.MyNet", "scale": 2, "n_feats": 16}
    assert dict(loss) == {"_target_": "mypkg.losses.MyLoss", "eps": 0.001}
