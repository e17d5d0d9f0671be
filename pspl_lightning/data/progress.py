"""The progress bar of long data jobs (decoded cache, litdata chunks): images done, rate, time left."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Images per second (rich's smoothed speed), blank until there is one."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.2f} images/s")


def image_progress(disable: bool = False) -> Progress:
    """A rich progress bar: description, bar, ``done/total``, images/s, elapsed and time left."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), disable=disable,
                    transient=False)
