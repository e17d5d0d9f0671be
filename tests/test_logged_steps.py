"""A run stopped and resumed logs every metric at the step the uninterrupted run logs it at."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest

from pspl_lightning.cli.train import train
from tests.conftest import TINY, compose_config

COMMON = ["trainer.log_every_n_steps=1", "logger=csv"]


def _logged(run: Path) -> dict[str, list[int]]:
    """metric -> the steps at which csv/metrics.csv holds a value of it."""
    steps: dict[str, list[int]] = defaultdict(list)
    with open(run / "csv" / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):  # epoch: Lightning's bookkeeping
                    steps[key].append(int(row["step"]))
    return dict(steps)


@pytest.mark.parametrize(("stop", "interval"), [
    ("trainer.max_steps=6", 3),
    ("+callbacks.stop._target_=tests.probes.StopAt", 3),
    pytest.param("trainer.max_steps=6", 100, marks=pytest.mark.slow),
],
                         ids=["at_a_validation", "between_validations", "final_validations_only"])
def test_resumed_run_logs_at_the_uninterrupted_steps(sample_root: Path, tmp_path: Path, stop: str,
                                                     interval: int) -> None:
    def cfg(name: str, *overrides: str):
        return compose_config("train", [*TINY, f"data.root={sample_root}", *COMMON,
                                        f"trainer.val_check_interval={interval}", *overrides],
                              tmp_path / name)

    straight = cfg("a", "trainer.max_steps=9")
    train(straight)
    first = cfg("b", "trainer.max_steps=9", stop, *(["+callbacks.stop.step=4"] if "StopAt" in stop else []))
    train(first)
    run = Path(first.paths.output_dir)
    train(cfg("c", "trainer.max_steps=9", f"resume={run}"))

    expected, got = _logged(Path(straight.paths.output_dir)), _logged(run)
    stopped_at = 6 if "max_steps" in stop else 4
    for key, steps in expected.items():
        # the interrupted run validated once more, where it stopped (logged by Lightning at that step - 1)
        seen = [s for s in got[key] if not (key.startswith("val/") and s == stopped_at - 1
                                            and stopped_at - 1 not in steps)]
        assert seen == steps, key
    assert expected["val/psnr_y"] == ([2, 5, 8] if interval == 3 else [8])  # after steps 3, 6, 9 / 9
    assert expected["train/loss"] == list(range(9))
