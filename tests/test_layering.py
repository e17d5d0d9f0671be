"""Import layering (docs/DECISIONS.md, "Layering"), read from the source with ``ast`` (nothing is imported):
``archs/`` imports neither ``data/`` nor ``inference/``; ``cli/upscale.py`` does not import ``cli/eval.py``;
warm start reads files through ``inference.loading.read_weights``; and the pure tensor code (``losses/``,
``metrics/``, ``archs/``, and ``degradations/``, whose docstring says so) imports neither Lightning nor
Hydra. Every rule is checked on the transitive closure of the project's own imports (importing ``a.b.c``
also runs ``a/__init__.py`` and ``a/b/__init__.py``), function-level imports included."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "pspl_lightning"
LIGHTNING_OR_HYDRA = {"lightning", "pytorch_lightning", "lightning_fabric", "hydra"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _with_parents(name: str) -> set[str]:
    """``name`` and the packages above it that belong to the project."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)


@cache
def direct_imports(module: str) -> frozenset[str]:
    """Every module named by an import statement anywhere in ``module`` (absolute names; for
    ``from X import y``, X and, where it is a module, ``X.y``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return frozenset(names)


@cache
def closure(module: str) -> frozenset[str]:
    """The project modules that importing ``module`` may run (``module`` and its packages included)."""
    seen: set[str] = set()
    todo = sorted(_with_parents(module))
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in direct_imports(current):
            todo.extend(_with_parents(name) - seen)
    return frozenset(seen)


def third_party(module: str) -> set[str]:
    """Top-level names of the non-project modules imported anywhere in ``module``'s closure."""
    return {name.split(".")[0] for m in closure(module) for name in direct_imports(m)
            if not name.startswith("pspl_lightning")}


def _under(folder: str) -> list[str]:
    return sorted(m for m in MODULES if m == f"pspl_lightning.{folder}" or
                  m.startswith(f"pspl_lightning.{folder}."))


def test_the_parser_sees_imports() -> None:
    """Positive controls, so that the rules below cannot pass by seeing nothing."""
    assert len(_under("archs")) >= 8 and len(_under("cli")) >= 10
    assert "pspl_lightning.imresize" in closure("pspl_lightning.archs.tiny")  # archs -> the MATLAB resize
    assert "pspl_lightning.archs.common" in direct_imports("pspl_lightning.archs.edsr")
    assert "pspl_lightning.cli.common" in closure("pspl_lightning.cli.upscale")
    assert "pspl_lightning.data.io" in closure("pspl_lightning.cli.upscale")
    assert {"lightning", "hydra"} <= third_party("pspl_lightning.cli.train")
    assert "lightning" in third_party("pspl_lightning.module")
    assert "torch" in third_party("pspl_lightning.losses.pspl")


@pytest.mark.parametrize("module", _under("archs"))
def test_archs_import_neither_data_nor_inference(module: str) -> None:
    bad = sorted(m for m in closure(module) if m.split(".")[1:2] in (["data"], ["inference"]))
    assert not bad, f"{module} imports {bad}"


def test_upscale_does_not_import_eval() -> None:
    assert "pspl_lightning.cli.eval" not in closure("pspl_lightning.cli.upscale")


@pytest.mark.parametrize("module", _under("losses") + _under("metrics") + _under("archs")
                         + _under("degradations"))
def test_pure_tensor_code_imports_neither_lightning_nor_hydra(module: str) -> None:
    bad = sorted(third_party(module) & LIGHTNING_OR_HYDRA)
    assert not bad, f"{module} imports {bad}"


def test_warm_start_reads_files_through_the_one_reader() -> None:
    """``inference/warm_start.py`` reads weights with ``inference.loading.read_weights``, and opens no file
    itself (no ``torch.load``, no safetensors)."""
    source = MODULES["pspl_lightning.inference.warm_start"].read_text()
    imported = {(n.module, a.name) for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)
                for a in n.names}
    assert ("pspl_lightning.inference.loading", "read_weights") in imported
    direct = direct_imports("pspl_lightning.inference.warm_start")
    assert "torch.load" not in source and not any(name.startswith("safetensors") for name in direct)
    helpers = {n.name for n in ast.parse(MODULES["pspl_lightning.imresize"].read_text()).body
               if isinstance(n, ast.FunctionDef)}
    assert {"imresize", "make_lr", "modcrop"} <= helpers  # the MATLAB resize lives in imresize.py


def _attributes_read(module: str) -> set[str]:
    """Every ``x.name`` attribute (read or written) in ``module``'s source."""
    tree = ast.parse(MODULES[module].read_text())
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def test_lightning_loop_state_is_touched_in_one_module() -> None:
    """``fit_loop`` (and through it the loop's counters) is named in ``loop_state.py`` alone (DECISIONS.md,
    "Lightning's loop state in one module")."""
    touching = sorted(m for m in MODULES if "fit_loop" in _attributes_read(m))
    assert touching == ["pspl_lightning.loop_state"]
    assert {"_batches_that_stepped", "batch_progress", "epoch_progress"} <= _attributes_read(touching[0])
