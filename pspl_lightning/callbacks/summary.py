"""Lightning's model summary without its FLOPs, which it counts only by running the module's
``example_input_array``; SRModule leaves that unset (its batches pass through the DataModule's transfer
hooks, which a bare tensor would not fit), so every run printed "Total FLOPs: 0" and a column of zeros."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary as _LightningSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

log = logging.getLogger("pspl_lightning")


class ModelSummary(_LightningSummary):
    """The plain-text summary (layers, parameters, size, modes) without the FLOPs column and total; it
    goes to the log, so the run's ``train.log`` keeps it too."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        columns = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size,
                                      total_training_modes, total_flops, *columns)
        log.info("\n%s", "\n".join(line for line in table.splitlines() if "Total Flops" not in line))


def summary_without_flops(trainer: L.Trainer) -> None:
    """Replace the summary Lightning adds (``trainer.enable_model_summary``, plain or rich) with
    :class:`ModelSummary` of the same depth; a run without one stays without."""
    for i, callback in enumerate(trainer.callbacks):
        if isinstance(callback, _LightningSummary) and not isinstance(callback, ModelSummary):
            trainer.callbacks[i] = ModelSummary(max_depth=callback._max_depth)
