"""Lightning callbacks: the PSPL pace and the end-of-run results."""

from pspl_lightning.callbacks.pace import PSPLPace
from pspl_lightning.callbacks.results import FinalResults

__all__ = ["FinalResults", "PSPLPace"]
