"""Lightning callbacks: the pace of a paced loss, image panels and the end-of-run results."""

from pspl_lightning.callbacks.guards import LastCheckpoint, NonFiniteWeightGuard, TrainingDiverged
from pspl_lightning.callbacks.images import ImagePanelLogger
from pspl_lightning.callbacks.pace import Pace
from pspl_lightning.callbacks.progress import ProgressBar
from pspl_lightning.callbacks.results import FinalResults

__all__ = ["FinalResults", "ImagePanelLogger", "LastCheckpoint", "NonFiniteWeightGuard", "Pace",
           "ProgressBar", "TrainingDiverged"]
