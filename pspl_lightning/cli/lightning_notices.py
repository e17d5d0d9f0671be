"""What Lightning prints that does not apply to a ``pspl-train`` run, filtered out by its exact words:
the advertisement for its cloud logger, torch's deprecation of ``LeafSpec`` (raised from Lightning's
own code at every run's first step: nothing a user can act on), and the warning that a run resumed
mid-epoch has a loader that is not resumable (the project's sampler resumes exactly, from the seed and
the batches already taken: ``tests/test_faults.py::test_resume_reproduces_the_uninterrupted_run``)."""

from __future__ import annotations

import logging
import re
import warnings

from lightning.pytorch.utilities.warnings import PossibleUserWarning

_ADVERT = "Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
_NOT_RESUMABLE = ("You're resuming from a checkpoint that ended before the epoch ended and your dataloader "
                  "is not resumable")
_LEAFSPEC = "`isinstance(treespec, LeafSpec)` is deprecated"


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _ADVERT not in record.getMessage()


def quiet_lightning() -> None:
    """Filter these notices in this process (idempotent)."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvert) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvert())
    warnings.filterwarnings("ignore", message=re.escape(_NOT_RESUMABLE), category=PossibleUserWarning)
    warnings.filterwarnings("ignore", message=re.escape(_LEAFSPEC), category=FutureWarning)
