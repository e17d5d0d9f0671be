"""What Lightning and other libraries print that does not help a ``pspl-*`` user, filtered out by its exact
words: the advertisement for Lightning's cloud logger, torch's deprecation of ``LeafSpec`` (raised from
Lightning's own code at every run's first step: nothing a user can act on), the warning that a run resumed
mid-epoch has a loader that is not resumable (the project's sampler resumes exactly, from the seed and
the batches already taken: ``tests/test_faults.py::test_resume_reproduces_the_uninterrupted_run``),
Lightning's "Seed set to 42", "TPU available: False" and "Detected KeyboardInterrupt" (the command's own
line on Ctrl-C says what happened and what is kept), matplotlib's font cache notice, alembic's
plugin set-up lines (Optuna imports it), and torch's ``meshgrid`` indexing notice (SwinIR and HAT call it
the old way inside spandrel). Lightning's own lines are printed once: Lightning gives its loggers a
handler of their own when it is imported before logging is set up, and Hydra's handler prints them again.
"""

from __future__ import annotations

import logging
import re
import warnings

_ADVERT = "Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
_NOT_RESUMABLE = ("You're resuming from a checkpoint that ended before the epoch ended and your dataloader "
                  "is not resumable")
_LEAFSPEC = "`isinstance(treespec, LeafSpec)` is deprecated"
_MESHGRID = "torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument"
_NO_TPU = "TPU available: False"
_KEYBOARD_INTERRUPT = "Detected KeyboardInterrupt, attempting graceful shutdown"  # the exit's line says more
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                      "lightning_fabric")
# loggers whose INFO lines say nothing a user acts on
_TO_WARNING = ("lightning.fabric.utilities.seed", "matplotlib", "alembic")


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (_ADVERT in message or message.startswith(_NO_TPU) or _KEYBOARD_INTERRUPT in message)


def quiet_libraries() -> None:
    """What needs no import of Lightning: log levels and warning filters (idempotent, cheap)."""
    for name in _TO_WARNING:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=re.escape(_MESHGRID), category=UserWarning)


def quiet_lightning() -> None:
    """Filter these notices in this process and print each Lightning line once (idempotent); call it
    after Lightning is imported."""
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    quiet_libraries()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvert) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvert())
    if logging.getLogger().handlers:  # Hydra's (or the caller's) handler prints every record once
        for name in _LIGHTNING_LOGGERS:
            own = logging.getLogger(name)
            for handler in [h for h in own.handlers if type(h) is logging.StreamHandler]:
                own.removeHandler(handler)
            own.propagate = True
    warnings.filterwarnings("ignore", message=re.escape(_NOT_RESUMABLE), category=PossibleUserWarning)
    warnings.filterwarnings("ignore", message=re.escape(_LEAFSPEC), category=FutureWarning)
