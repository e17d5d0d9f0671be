"""End-of-run results: a validation pass at the last step and ``metrics.json`` in the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from pspl_lightning.atomic import atomic_path


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON through a temporary file and a rename: never a torn file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


class FinalResults(Callback):
    """Makes the run end with a validation pass and keeps ``<output_dir>/metrics.json`` current.

    Lightning validates every ``val_check_interval`` steps only; when ``max_steps`` falls between two
    intervals this asks the loop to stop at the last step, which triggers a validation there (inside
    ``fit``, so it also works under ``ddp_spawn``). After every validation, global rank 0 writes the
    metrics (float64 values from the module when it has them) with the global step.
    """

    def __init__(self, output_dir: str | Path, filename: str = "metrics.json") -> None:
        self.path = Path(output_dir) / filename

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = dict(getattr(pl_module, "last_val_metrics", {}) or {})
        if not metrics:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        write_json_atomic(self.path, {"global_step": trainer.global_step, **metrics})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.path.is_file():
            return
        results = json.loads(self.path.read_text())
        for lg in trainer.loggers:
            experiment = getattr(lg, "experiment", None)
            run_summary = getattr(experiment, "summary", None)
            if run_summary is not None:  # W&B: final metrics in the run summary
                for key, value in results.items():
                    run_summary[f"final/{key}"] = value
