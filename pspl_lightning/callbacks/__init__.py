"""Lightning callbacks: the PSPL pace."""

from pspl_lightning.callbacks.pace import PSPLPace

__all__ = ["PSPLPace"]
