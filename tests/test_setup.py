"""`make setup` installs what the tests use, so that none of them skips or fails for a missing package."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_make_setup_installs_every_extra() -> None:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r'pip install .*-e "\.\[([^\]]*)\]"', makefile)
    assert match, "no `pip install -e \".[extras]\"` line in the Makefile"
    installed = set(match.group(1).split(","))
    assert "safetensors" in installed  # tests/test_inference.py exports .safetensors
    assert set(_project()["optional-dependencies"]) <= installed
    assert re.search(r"^\$\(VENV\)/\.installed: .*\bMakefile\b", makefile, re.M)  # an edit here re-runs setup


def test_wandb_floor_has_what_the_tests_use() -> None:
    """`wandb leet inspect --summary --json` (tests/test_scale_out.py) is new in wandb 0.31.0."""
    (requirement,) = [d for d in _project()["dependencies"] if re.match(r"wandb\b", d)]
    floor = Version(re.search(r">=\s*([\w.]+)", requirement).group(1))
    assert floor >= Version("0.31")
    assert Version(version("wandb")) >= floor
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert "--summary" in proc.stdout and "--json" in proc.stdout
