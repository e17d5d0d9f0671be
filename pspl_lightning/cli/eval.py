"""``pspl-eval``: trained networks on benchmark folders -> PSNR/SSIM table, results.csv, results.json."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pspl_lightning.cli.common import asked_model
from pspl_lightning.cli.failures import one_line_failures
from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.data.benchmarks import LAYOUT_HELP, find_set_dir
from pspl_lightning.data.degrade import degradation_from_config, set_files
from pspl_lightning.errors import ConfigError, DataNotFoundError
from pspl_lightning.inference.benchmark import ImageScore, SetScore, as_dicts, evaluate_set, summarize
from pspl_lightning.inference.loading import LoadedNetwork, WeightsError, describe_model, load_network
from pspl_lightning.inference.lpips import LPIPSRecorder, lpips_metric, lpips_weights_missing
from pspl_lightning.inference.upscaler import Upscaler, resolve_device

log = logging.getLogger("pspl_lightning")
# configs/eval.yaml's sets: of these, the ones present under benchmark_root are evaluated
DEFAULT_SETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]


def load_networks(cfg: DictConfig) -> list[LoadedNetwork]:
    """One network per checkpoint in ``cfg.ckpt``, matched one-to-one with ``cfg.scales`` when given."""
    ckpts, scales = [Path(p) for p in _as_list(cfg.ckpt)], [int(s) for s in _as_list(cfg.scales)]
    if not ckpts:
        raise ConfigError("ckpt is empty: pass ckpt=<file> or ckpt=[x2.ckpt,x3.ckpt]")
    device, model = resolve_device(cfg.device), asked_model(cfg)
    only_scale = scales[0] if len(scales) == 1 else None
    nets = [load_network(p, model=model, scale=only_scale, device=device, scale_key="scales") for p in ckpts]
    by_scale: dict[int, LoadedNetwork] = {}
    for net in nets:
        if scales and net.scale not in scales:
            raise WeightsError(f"{net.source} is a x{net.scale} model ({net.describe()}), "
                               f"but scales={scales}")
        if net.scale in by_scale:
            raise WeightsError(f"{by_scale[net.scale].source} and {net.source} are both x{net.scale} models: "
                               f"give one checkpoint per scale")
        by_scale[net.scale] = net
    missing = [s for s in scales if s not in by_scale]
    if missing:
        have = ", ".join(f"{n.source} (x{n.scale})" for n in nets)
        raise WeightsError(f"no checkpoint for scale(s) {missing}: the checkpoints are {have}")
    return [by_scale[s] for s in scales] if scales else nets


def find_sets(root: str | Path, sets: Sequence[str]) -> dict[str, Path]:
    """The folder of each set. The default list (``DEFAULT_SETS``) evaluates the sets that are there and
    names the missing ones in one line; a set named on the command line must exist."""
    if list(sets) != list(DEFAULT_SETS):
        return {name: find_set_dir(root, name) for name in sets}
    found: dict[str, Path] = {}
    for name in sets:
        try:
            found[name] = find_set_dir(root, name)
        except DataNotFoundError:
            if not Path(root).is_dir():
                raise
    missing = [name for name in sets if name not in found]
    if not found:
        raise DataNotFoundError(f"none of the benchmark sets {', '.join(sets)} is under {root}; "
                                f"{LAYOUT_HELP}")
    if missing:
        log.warning("Benchmark set(s) not under %s, skipped: %s (evaluating %s)", root, ", ".join(missing),
                    ", ".join(found))
    return found


def write_results(output_dir: Path, scores: Sequence[ImageScore], summary: Sequence[SetScore],
                  meta: dict[str, Any]) -> None:
    """``results.csv`` (one row per image) and ``results.json`` (run options, per-set means, per-image)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["set", "scale", "image", "psnr_y", "ssim_y"])
        writer.writeheader()
        for row in as_dicts(scores):
            writer.writerow({**row, "psnr_y": f"{row['psnr_y']:.6f}", "ssim_y": f"{row['ssim_y']:.6f}"})
    payload = {**meta, "sets": as_dicts(summary), "images": as_dicts(scores)}
    (output_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")


def results_table(summary: Sequence[SetScore], title: str) -> Table:
    table = Table(title=title)
    for name, justify in (("Set", "left"), ("Scale", "right"), ("Images", "right"), ("PSNR-Y (dB)", "right"),
                          ("SSIM-Y", "right")):
        table.add_column(name, justify=justify)
    for s in summary:
        table.add_row(s.set, f"x{s.scale}", str(s.images), f"{s.psnr_y:.2f}", f"{s.ssim_y:.4f}")
    return table


def evaluate(cfg: DictConfig, console: Console | None = None) -> list[SetScore]:
    """Evaluate as ``cfg`` says; print the table, write the result files; return the per-set means."""
    console = console or Console()
    output_dir = Path(cfg.paths.output_dir)
    nets = load_networks(cfg)
    sets = [str(s) for s in _as_list(cfg.sets)]
    if not sets:
        raise ConfigError("sets is empty: name at least one benchmark folder, e.g. sets=[Set5]")
    set_dirs = find_sets(cfg.benchmark_root, sets)
    sets = list(set_dirs)  # the default list: the sets present
    # bicubic: the sets' LR files as always; bd/dn/realistic: <Set>/LR_<name>/X<s>/ or made from HR here
    degradations = {n.scale: degradation_from_config(cfg.get("degradation"), n.scale) for n in nets}
    jobs = [(net, name, set_files(set_dirs[name], net.scale, degradations[net.scale],
                                  output_dir / "lr" / set_dirs[name].name / f"x{net.scale}",
                                  resolve_device(cfg.device)))
            for net in nets for name in sets]
    scores: list[ImageScore] = []
    lpips, lpips_scores = _lpips(cfg), {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for net, name, files in jobs:
            folder = set_dirs[name].name
            upscaler = Upscaler(net, tile=cfg.tile, tile_overlap=cfg.tile_overlap,
                                self_ensemble=bool(cfg.self_ensemble))
            task = progress.add_task(f"{name} x{net.scale}", total=len(files))
            save_dir = output_dir / "images" / folder / f"x{net.scale}" if cfg.save_images else None
            if lpips is not None:  # metrics.lpips=true with its weights at hand: scored on the same SR
                upscaler = lpips_scores[f"{folder} x{net.scale}"] = LPIPSRecorder(upscaler, files, lpips)
            scores += evaluate_set(upscaler, folder, files, save_dir,
                                   on_image=lambda task=task: progress.advance(task))
    summary = summarize(scores)
    meta = {
        "checkpoints": {f"x{n.scale}": {"path": str(n.source), "network": n.describe()} for n in nets},
        "protocol": "Y channel (BT.601), border crop = scale, SR rounded to 8 bit, float64; "
                    "SSIM 11x11 Gaussian sigma 1.5, valid region",
        "self_ensemble": bool(cfg.self_ensemble), "tile": cfg.tile, "tile_overlap": cfg.tile_overlap,
        "degradation": {f"x{s}": d.describe() for s, d in degradations.items() if d is not None},
    }
    if lpips_scores:
        meta["lpips"] = {k: {"mean": r.mean(), "images": dict(r.scores)} for k, r in lpips_scores.items()}
    write_results(output_dir, scores, summary, meta)
    plus = " (self-ensemble x8)" if cfg.self_ensemble else ""
    title = ", ".join(f"{n.describe()}" for n in nets) + plus
    console.print(results_table(summary, title))
    if lpips_scores:
        net_type = cfg.metrics.get("lpips_net", "alex")
        console.print(f"LPIPS ({net_type}, lower is closer): "
                      + ", ".join(f"{k} {r.mean():.4f}" for k, r in lpips_scores.items()))
    console.print(f"Per-image results: {output_dir / 'results.csv'}, {output_dir / 'results.json'}")
    return summary


def _lpips(cfg: DictConfig) -> Any:
    """The LPIPS scorer when ``metrics.lpips`` asks for it and its weights are at hand; else None (one line
    says why when they are not)."""
    metrics = cfg.get("metrics") or {}
    if not metrics.get("lpips"):
        return None
    net_type = str(metrics.get("lpips_net", "alex"))
    missing = lpips_weights_missing(net_type)
    if missing is not None:
        log.warning(missing)
        return None
    return lpips_metric(net_type, resolve_device(cfg.device))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@one_line_failures()
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Console entry point of ``pspl-eval``."""
    _hydra_main()


__all__ = ["describe_model", "evaluate", "load_networks", "main"]

if __name__ == "__main__":
    main()
