"""`make setup` installs what the tests use, so that none of them skips or fails for a missing package."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
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


def _pins(name: str) -> dict[str, str]:
    """``requirements/<name>.txt`` as {package: version}."""
    lines = (ROOT / "requirements" / f"{name}.txt").read_text().splitlines()
    return dict(line.split("==") for line in (ln.split("#")[0].strip() for ln in lines) if "==" in line)


def _tested_with() -> dict[str, tuple[str, str]]:
    """README's "Tested with" table: {package: (oldest, newest)}."""
    readme = (ROOT / "README.md").read_text()
    head = "| package | oldest (`make test-oldest`) | newest (`make test`, CI) |"
    assert head in readme, "README has no tested-versions table"
    rows = readme.split(head, 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return {name: (old.split()[0], new) for name, old, new in cells}


def test_torch_stack_is_pinned_in_one_place_and_installed_first() -> None:
    makefile = (ROOT / "Makefile").read_text()
    setup = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in setup.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert "-r requirements/torch.txt" in installs[0]
    assert not re.search(r"torch(vision)?==", makefile)  # the versions live in requirements/ only
    assert _pins("torch") == {"torch": "2.14.1", "torchvision": "0.29.1"}


def test_readme_table_is_the_pinned_stacks_and_pyproject_floors() -> None:
    table, oldest, newest = _tested_with(), _pins("oldest"), _pins("torch")
    for name, version_ in oldest.items():
        assert table[name][0] == version_, name
        (requirement,) = [d for d in _project()["dependencies"] if re.match(rf"{name}\b", d)]
        assert Version(re.search(r">=\s*([\w.]+)", requirement).group(1)) == Version(version_), name
        assert "<" not in requirement, f"{requirement}: no upper caps"
    for name, version_ in newest.items():
        assert table[name][1] == version_, name


def test_this_environment_is_one_of_the_tested_stacks() -> None:
    """The suite runs on a column of the table: newest (make test, CI) or oldest (make test-oldest)."""
    table = _tested_with()
    column = 0 if version("torch").split("+")[0] == table["torch"][0] else 1
    # the oldest stack has no usable torchvision (litdata pulls in one that cannot import beside 2.13 CPU)
    installed = {name: version(name) for name in table if column == 1 or name != "torchvision"}
    installed["torch"] = installed["torch"].split("+")[0]
    assert installed == {k: table[k][column] for k in installed}


def test_torch_deprecation_raised_by_lightning_is_not_printed_in_runs() -> None:
    """torch deprecates ``LeafSpec``, which Lightning 2.6 builds at every run's first step."""
    from lightning.pytorch.utilities._pytree import _tree_flatten

    from pspl_lightning.cli.lightning_notices import quiet_lightning

    def leafspec(seen: list[warnings.WarningMessage]) -> int:
        return sum("LeafSpec" in str(w.message) for w in seen)

    with warnings.catch_warnings(record=True) as before:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        _tree_flatten(1)
        with warnings.catch_warnings(record=True) as after:
            quiet_lightning()
            _tree_flatten(1)
    assert (leafspec(before), leafspec(after)) == (1, 0)  # torch 2.13 and 2.14 both warn


def test_make_test_runs_two_workers_by_file() -> None:
    """README, Development: `make test` runs the files in TEST_WORKERS processes (default 2), by file."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TEST_WORKERS \?= 2$", makefile, re.M)
    assert re.search(r"^PYTEST_PARALLEL := -n \$\(TEST_WORKERS\) --dist loadfile$", makefile, re.M)
    (test_target,) = re.findall(r"^test: setup.*\n\t(.*)$", makefile, re.M)
    assert "$(PYTEST_PARALLEL)" in test_target
    assert any(re.match(r"pytest-xdist\b", d) for d in _project()["optional-dependencies"]["dev"])


def test_each_worker_computes_with_its_share_of_the_cores() -> None:
    """Under xdist, this process and what it starts (OMP_NUM_THREADS) use cores // workers threads."""
    import os

    import torch

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        pytest.skip("a make test worker's setting (this run has no xdist workers)")
    share = max(1, len(os.sched_getaffinity(0)) // int(workers))
    assert os.environ["OMP_NUM_THREADS"] == str(share) and torch.get_num_threads() == share
