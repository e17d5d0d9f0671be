"""What older runs recorded differently, read the way today's code expects (one place for every reader)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Keys that runs before a change kept inside the model config: ``model.init_from`` became the top-level
# ``init_from`` (the warm start is the entry point's, not the network's, and is already in the weights).
MOVED_MODEL_KEYS = ("init_from",)


def model_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded model config without the keys that no longer belong to it."""
    return {k: v for k, v in model.items() if k not in MOVED_MODEL_KEYS}
