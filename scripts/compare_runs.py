"""Validation PSNR versus step for several runs (e.g. PSPL against L1), marking where each first reaches
a target PSNR, with a table of the speed-ups.

    python scripts/compare_runs.py outputs/train/runs/<pspl run> outputs/train/runs/<l1 run> \\
        --labels PSPL L1 --target 34.4 --out figures/compare.png

A run is a ``pspl-train`` run folder (``csv/metrics.csv`` from ``logger=csv``, or a W&B offline folder
``wandb/offline-run-*`` from ``logger=wandb``), or one of those files directly. The existing output file
is kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Lightning logs a validation at the index of the last training batch (0-based): after 1000 optimizer
# steps it logs step 999. Curves are drawn against optimizer steps taken (index + 1), so with
# --step-unit 1000 the x axis counts the reference's 1-based epochs. W&B's own counter is a last resort.
STEP_KEYS = {"trainer/global_step": 1, "step": 1, "_step": 0}  # key -> offset to optimizer steps taken


@dataclass
class Curve:
    """One run's metric as (optimizer steps taken, value) points, sorted by step."""

    label: str
    source: Path
    steps: list[int]
    values: list[float]

    def first_reach(self, target: float) -> int | None:
        """The first step whose value is >= ``target`` (None if never)."""
        return next((s for s, v in zip(self.steps, self.values, strict=True) if v >= target), None)


def _points(rows: Sequence[dict[str, object]], metric: str, source: Path) -> tuple[list[int], list[float]]:
    found: dict[int, float] = {}
    for row in rows:
        value = row.get(metric)
        key = next((k for k in STEP_KEYS if row.get(k) not in (None, "")), None)
        if value in (None, "") or key is None:
            continue
        value = float(value)  # type: ignore[arg-type]
        if math.isfinite(value):
            found[int(float(row[key])) + STEP_KEYS[key]] = value  # type: ignore[arg-type]
    if not found:
        raise ValueError(f"{source}: no values of {metric!r} (is it a validation metric of this run?)")
    steps = sorted(found)
    return steps, [found[s] for s in steps]


def read_csv(path: Path) -> list[dict[str, object]]:
    """Rows of a Lightning CSVLogger ``metrics.csv`` (empty cells where a row lacks a metric)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# W&B >= 0.19 no longer ships a Python reader for its run files, so the record framing (LevelDB's log
# format with a W&B header) is read here; the records themselves are parsed with wandb's protobuf classes.
_WANDB_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version
_RECORD_HEADER = struct.Struct("<IHB")  # crc32, length, type (1 full, 2 first, 3 middle, 4 last)
_BLOCK = 32768


def _wandb_payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if len(data) < _WANDB_HEADER.size or _WANDB_HEADER.unpack_from(data)[0] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (.wandb)")
    payloads, pending, pos = [], b"", _WANDB_HEADER.size
    while pos + _RECORD_HEADER.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _RECORD_HEADER.size:  # block trailer: zero padding
            pos += room
            continue
        crc, length, kind = _RECORD_HEADER.unpack_from(data, pos)
        if length == 0 and kind == 0:  # zero-filled rest of a block, or of a file still being written
            pos += room
            continue
        chunk = data[pos + _RECORD_HEADER.size : pos + _RECORD_HEADER.size + length]
        if len(chunk) < length:
            break  # truncated last record of a live run
        if zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: corrupt record at byte {pos}")
        pos += _RECORD_HEADER.size + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            payloads.append(pending + chunk)
            pending = b""
    return payloads


def read_wandb(path: Path) -> list[dict[str, object]]:
    """History rows of a W&B run file (``wandb/offline-run-*/run-*.wandb``)."""
    from wandb.proto import wandb_internal_pb2

    rows: list[dict[str, object]] = []
    for payload in _wandb_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, object] = {"_step": record.history.step.num}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            try:
                row[key] = json.loads(item.value_json)
            except ValueError:
                continue
        rows.append(row)
    return rows


def find_log(run: Path) -> Path:
    """The metrics file of a run folder: ``csv/metrics.csv``, else the newest W&B run file."""
    if run.is_file():
        return run
    for candidate in (run / "csv" / "metrics.csv", run / "metrics.csv"):
        if candidate.is_file():
            return candidate
    wandb_files = sorted(run.glob("**/*run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if wandb_files:
        return wandb_files[-1]
    raise FileNotFoundError(f"{run}: no csv/metrics.csv (logger=csv) and no wandb/*run-*/run-*.wandb "
                            f"(logger=wandb) in this run folder")


def read_run(run: str | Path, metric: str, label: str | None = None) -> Curve:
    """The ``metric`` curve of a run folder or log file."""
    run = Path(run)
    if not run.exists():
        raise FileNotFoundError(f"{run}: no such run folder or log file")
    log = find_log(run)
    rows = read_wandb(log) if log.suffix == ".wandb" else read_csv(log)
    steps, values = _points(rows, metric, log)
    return Curve(label or run.name, log, steps, values)


def plot(curves: Sequence[Curve], metric: str, target: float | None, out: Path, step_unit: int) -> None:
    fig, ax = plt.subplots(figsize=(7.0, 4.4), dpi=120)
    unit = "steps" if step_unit == 1 else f"x{step_unit:,} steps"
    for curve in curves:
        xs = [s / step_unit for s in curve.steps]
        (line,) = ax.plot(xs, curve.values, label=curve.label)
        reach = curve.first_reach(target) if target is not None else None
        if reach is not None:
            x = reach / step_unit
            ax.axvline(x, color=line.get_color(), linestyle=":", linewidth=1)
            ax.plot([x], [curve.values[curve.steps.index(reach)]], "o", color=line.get_color())
            ax.annotate(f"{reach / step_unit:g}", (x, target), textcoords="offset points", xytext=(3, -12),
                        color=line.get_color(), fontsize=8)
    if target is not None:
        ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"{target:g}")
    ax.set(xlabel=unit, ylabel=metric, title=f"{metric} versus training step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def summary(curves: Sequence[Curve], target: float | None) -> str:
    """A text table: best and last value, first step reaching the target, speed-up against the last run."""
    base = curves[-1].first_reach(target) if target is not None else None
    lines = [f"{'run':<24} {'best':>8} {'at step':>9} {'last':>8} {'reach step':>11} {'speed-up':>9}"]
    for c in curves:
        best = max(range(len(c.values)), key=c.values.__getitem__)
        reach = c.first_reach(target) if target is not None else None
        speed = f"{base / reach:.2f}x" if reach and base else "-"
        lines.append(f"{c.label[:24]:<24} {c.values[best]:8.4f} {c.steps[best]:9d} {c.values[-1]:8.4f} "
                     f"{reach if reach is not None else '-':>11} {speed:>9}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders or metrics files; the baseline of the "
                   "speed-up column last")
    p.add_argument("--labels", nargs="+", help="one label per run (default: folder names)")
    p.add_argument("--metric", default="val/psnr_y")
    p.add_argument("--target", type=float, help="mark where each run first reaches this value")
    p.add_argument("--step-unit", type=int, default=1, help="x axis unit in steps (1000: epochs)")
    p.add_argument("--out", type=Path, default=Path("compare_runs.png"))
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Curve]:
    """Read the runs, draw the figure, print the table; returns the curves."""
    args = parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        raise SystemExit(f"--labels: {len(args.labels)} labels for {len(args.runs)} runs")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    labels = args.labels or [None] * len(args.runs)
    curves = [read_run(r, args.metric, lb) for r, lb in zip(args.runs, labels, strict=True)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, args.metric, args.target, args.out, args.step_unit)
    print(summary(curves, args.target))
    if args.target is not None and len(curves) > 1:
        print(f"speed-up: steps of the last run to reach {args.target:g} / steps of each run")
    print(f"wrote {args.out}")
    return curves


if __name__ == "__main__":
    main(sys.argv[1:])
