"""Logger variants whose history survives a resume: CSV that keeps what the run wrote before its checkpoint
and drops what a killed run wrote after it (the resumed run writes it again), TensorBoard likewise (a purge
of the steps the resumed run logs again), and W&B that prints only what a user needs and, resumed, skips
the steps it already holds.

A resumed run continues from a checkpoint saved at global step ``k``: it logs every metric whose step is
``k`` or more again (Lightning logs the metrics of the batch that makes step ``s + 1``, and a validation
after step ``s + 1``, at step ``s``), and nothing before. So at each checkpoint the history below ``k`` is
written out (:meth:`checkpointed`) and on resume the history from ``k`` on is dropped (:meth:`rewind`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.csv_logs import _ExperimentWriter as _FabricWriter
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from pspl_lightning.atomic import atomic_path

log = logging.getLogger("pspl_lightning")


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; this one appends to it instead."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to the run's ``metrics.csv`` on resume, writes
    every row below a checkpoint's step to disk (a SIGKILL loses none of them) and drops the rows a resumed
    run writes again."""

    _written_below = 0  # rows with a step below this are on disk as soon as they are logged

    @property
    @rank_zero_experiment
    def experiment(self) -> _FabricWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        if step is not None and step < self._written_below:
            self.save()

    @rank_zero_only
    def checkpointed(self, step: int) -> None:
        """A checkpoint at global step ``step`` is being saved: the history below it goes to disk now and as
        it is logged (the metrics of the step just made are logged right after the save)."""
        self._written_below = step
        self.save()

    @rank_zero_only
    def rewind(self, step: int) -> None:
        """Resuming from global step ``step``: drop the rows at ``step`` and after (atomically)."""
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [row for row in rows if row.get("step") in (None, "") or int(float(row["step"])) < step]
        if len(kept) == len(rows):
            return
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
        log.info("%s: dropped %d rows logged after the checkpoint (step %d); the resumed run logs them again",
                 path, len(rows) - len(kept), step)


class TensorBoardLogger(_LightningTensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` whose events below a checkpoint's step are on disk
    once logged, and which purges on resume the steps the resumed run logs again (TensorBoard's own
    ``purge_step``: readers drop the earlier events at that step and after)."""

    _written_below = 0

    @property
    def experiment(self) -> Any:
        if self._experiment is None and rank_zero_only.rank == 0:
            _after_existing_events(Path(self.log_dir))
        return super().experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        if step is not None and step < self._written_below:
            self.experiment.flush()

    @rank_zero_only
    def checkpointed(self, step: int) -> None:
        """See :meth:`CSVLogger.checkpointed`."""
        self._written_below = step
        if self._experiment is not None:
            self._experiment.flush()

    @rank_zero_only
    def rewind(self, step: int) -> None:
        """Resuming from global step ``step``: events at ``step`` and after, written before, are purged."""
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        writer = self.experiment.file_writer if hasattr(self.experiment, "file_writer") else None
        if writer is None:
            return
        writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
        writer.flush()


class WandbLogger(_LightningWandbLogger):
    """``lightning.pytorch.loggers.WandbLogger`` that says what a user needs and nothing else: an offline run
    prints one line, where it is and how to upload it (wandb's own 30-odd lines of history, summary and
    hints are silenced), an online run only wandb's essential lines (``quiet``). Without the ``anonymous``
    setting, which Lightning always passes to ``wandb.init`` and wandb only answers with a warning."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)
        if "settings" not in self._wandb_init:
            import wandb

            self._wandb_init["settings"] = wandb.Settings(silent=True) if self._offline \
                else wandb.Settings(quiet=True)

    # W&B keeps every row it was sent: the steps a killed run sent after its checkpoint are not dropped on
    # resume; the resumed run sends them again. The last step sent and its keys are kept beside the run
    # (``pspl_logged.json``), so a resumed run skips what W&B already holds: the same values, the resumed
    # run being bit-exact.
    _skip_through: tuple[int, frozenset[str]] | None = None
    _last_sent: tuple[int | None, set[str]] = (None, set())  # what pspl_logged.json says, kept here too

    def _logged_file(self) -> Path:
        return Path(self.save_dir or ".") / "wandb" / "pspl_logged.json"

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if step is not None and self._skip_through is not None:
            last, keys = self._skip_through
            if step < last or (step == last and set(metrics) <= keys):
                return
            self._skip_through = None
        super().log_metrics(metrics, step)
        if step is not None:
            last_step, keys = self._last_sent
            keys = (keys if last_step == step else set()) | set(metrics)
            self._last_sent = (step, keys)
            path = self._logged_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"step": step, "keys": sorted(keys)}))

    @rank_zero_only
    def rewind(self, step: int) -> None:
        """Resuming from global step ``step``: skip the steps from there that W&B already holds."""
        logged = _read_json(self._logged_file())
        if logged.get("step") is not None and int(logged["step"]) >= step:
            self._skip_through = (int(logged["step"]), frozenset(logged.get("keys", [])))

    @property
    def experiment(self) -> Any:
        fresh = self._experiment is None
        run = super().experiment
        if fresh and getattr(run, "offline", False):  # Lightning asks for mode "dryrun": wandb's offline
            log.info("W&B run saved offline in %s; upload it with: wandb sync %s", run.settings.sync_dir,
                     run.settings.sync_dir)
        return run


def _after_existing_events(folder: Path, patience_s: float = 2.0) -> None:
    """Waits, if needed, until a new event file in ``folder`` sorts after the ones there: TensorBoard reads a
    folder's files in name order, and the name starts with the second it was made, so a run resumed in the
    same second as the killed run's file was made had its events read first (its purge undone). A clock
    more than ``patience_s`` behind the files' is reported instead of waited out."""
    stamps = [int(name.split(".")[3]) for name in _event_files(folder)]
    if not stamps:
        return
    wait = max(stamps) + 1 - time.time()
    if wait > patience_s:
        log.warning("%s holds TensorBoard events dated %.0f s ahead of this machine's clock; TensorBoard may "
                    "show this run's steps before theirs", folder, wait)
    elif wait > 0:
        time.sleep(wait)


def _event_files(folder: Path) -> list[str]:
    """Names of the TensorBoard event files in ``folder`` (none where it does not exist or is remote)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [name for name in names if name.startswith("events.out.tfevents.")
            and len(name.split(".")) > 3 and name.split(".")[3].isdigit()]


def _read_json(path: Path) -> dict[str, Any]:
    """A small JSON record, or {} where there is none (or a torn one)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
