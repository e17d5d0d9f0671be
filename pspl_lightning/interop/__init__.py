"""Interoperation with community tools (spandrel, ONNX).

``import pspl_lightning`` calls :func:`install_spandrel_hook`: as soon as spandrel is imported (or at once
if it already is), the project's EDSR and RDN join spandrel's ``MAIN_REGISTRY``, so
``spandrel.ModelLoader().load_from_file("edsr.safetensors")`` loads them. The hook imports neither torch
nor spandrel itself, so importing the package stays cheap and works without spandrel.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any


def register_spandrel() -> None:
    """Add the project's architectures to spandrel's registry now (imports spandrel and torch)."""
    from pspl_lightning.interop.spandrel_archs import register

    register()


def _register_quietly() -> None:
    try:
        register_spandrel()
    except Exception as exc:  # a broken or older spandrel must not break the import of spandrel itself
        warnings.warn(f"pspl_lightning could not register EDSR/RDN with spandrel: {exc}", stacklevel=2)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``spandrel`` is first imported, wraps its loader so that the
    registration runs right after spandrel's own module code (a post-import hook; Python has none)."""

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname != "spandrel":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_and_register(module: ModuleType) -> None:
            exec_module(module)
            _register_quietly()

        loader.exec_module = exec_and_register
        return spec


def install_spandrel_hook() -> None:
    """Register with spandrel now if it is imported, else when it is (once per process)."""
    if "spandrel" in sys.modules:
        _register_quietly()
    elif not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
