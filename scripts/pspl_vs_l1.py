"""Does PSPL help? Train PSPL and L1 with several seeds, then plot validation PSNR-Y against step (mean and
per-seed spread) and tabulate the final PSNR-Y and SSIM-Y of every seed, their paired differences and when
each loss first reaches L1's final mean PSNR.

    python scripts/pspl_vs_l1.py --out figures/pspl_vs_l1.png            # sample set, seeds 42-46, CPU
    python scripts/pspl_vs_l1.py --preset edsr_baseline_x2 --target 34.4 --out figures/div2k.png \\
        data.root=/data/DIV2K hydra/launcher=local_parallel               # the paper's plot, a GPU per run
    python scripts/pspl_vs_l1.py --runs outputs/train/multiruns/<sweep> --out figures/again.png  # re-plot

Without ``--preset`` the sweep is ``loss=pspl,l1`` on the default config (sample set, 200 steps), validated
every 20 steps; with ``--preset NAME`` it is ``experiment=NAME_pspl,NAME_l1`` with the preset's schedule and
the x axis in thousands of steps (the reference's epochs). Any other argument is a ``pspl-train``
override. Writes the figure, ``<out>.md`` (the tables) and ``<out>.json`` (every number).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script compare_runs.py
from compare_runs import Curve, read_run  # noqa: E402

from pspl_lightning.cli.failures import one_line_failures  # noqa: E402
from pspl_lightning.errors import OutputExistsError  # noqa: E402

METRIC = "val/psnr_y"
SSIM = "val/ssim_y"  # PSPL weighs pixels by SSIM: its final value is tabulated beside the PSNR
# Loggers store float32 (about 4e-6 dB of rounding at 33 dB) and metrics.json float64: a curve "reaches"
# a value within this much, so the baseline's own mean curve reaches its final mean.
REACH_TOL_DB = 1e-4


@dataclass
class Arm:
    """One loss of the comparison: a curve and a final value per seed."""

    name: str  # the swept value, e.g. "pspl" or "edsr_baseline_x2_l1"
    curves: dict[int, Curve] = field(default_factory=dict)
    finals: dict[int, float] = field(default_factory=dict)
    ssims: dict[int, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name.rsplit("_", 1)[-1].upper()

    def mean_curve(self) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """Steps validated in every seed's run, with the mean, minimum and maximum over seeds."""
        steps = sorted(set.intersection(*(set(c.steps) for c in self.curves.values())))
        values = np.array([[c.values[c.steps.index(s)] for s in steps] for c in self.curves.values()])
        return steps, values.mean(0), values.min(0), values.max(0)


def first_reach(steps: Sequence[int], values: Sequence[float], target: float) -> int | None:
    """The first step whose value is at least ``target`` (within ``REACH_TOL_DB``; None if none is)."""
    return next((s for s, v in zip(steps, values, strict=True) if v >= target - REACH_TOL_DB), None)


def _job_arm_and_seed(job: Path, arm_key: str) -> tuple[str, int]:
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    found = dict(o.split("=", 1) for o in overrides if "=" in o)
    if arm_key not in found or "seed" not in found:
        raise ValueError(f"{job}: its overrides ({' '.join(overrides)}) do not set {arm_key}= and seed=; "
                         f"is it a job of this script's sweep?")
    return found[arm_key], int(found["seed"])


def read_sweep(sweep: Path, arm_key: str) -> list[Arm]:
    """The arms of a finished sweep folder (one numbered job folder per arm and seed), in sweep order."""
    found = list(sweep.iterdir()) if sweep.is_dir() else []
    jobs = sorted((p for p in found if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not jobs:
        raise FileNotFoundError(f"{sweep}: no sweep job folders (0/, 1/, ...) in it")
    arms: dict[str, Arm] = {}
    for job in jobs:
        name, seed = _job_arm_and_seed(job, arm_key)
        metrics_file = job / "metrics.json"
        if not metrics_file.is_file():
            raise FileNotFoundError(f"{job} ({arm_key}={name} seed={seed}) has no metrics.json: the run "
                                    f"failed or is still running (see its train.log)")
        metrics = json.loads(metrics_file.read_text())
        if SSIM not in metrics:
            raise KeyError(f"{metrics_file} holds no {SSIM}: written by an older pspl-train?")
        arm = arms.setdefault(name, Arm(name))
        arm.curves[seed] = read_run(job, METRIC, f"{name} seed {seed}")
        arm.finals[seed], arm.ssims[seed] = float(metrics[METRIC]), float(metrics[SSIM])
    return list(arms.values())


def paired(test: dict[int, float], base: dict[int, float]) -> dict:
    """Per-seed differences ``test - base`` over the seeds both have, their mean, std and the count > 0."""
    seeds = sorted(set(test) & set(base))
    diffs = [test[s] - base[s] for s in seeds]
    return {"paired_diff": dict(zip(map(str, seeds), diffs, strict=True)),
            "mean_diff": statistics.fmean(diffs), "std_diff": _std(diffs), "wins": sum(d > 0 for d in diffs)}


def summarize(arms: Sequence[Arm]) -> dict:
    """Final PSNR and SSIM per seed, means, paired differences against the last arm (the baseline), and
    when each mean PSNR curve first reaches the baseline's final mean PSNR. PSNR's numbers are at the top
    level (``paired_diff``, ``mean_diff``, ...), SSIM's under ``ssim`` with the same keys."""
    if len(arms) != 2:
        raise ValueError(f"expected two losses to compare, found {[a.name for a in arms]}")
    test, base = arms
    seeds = sorted(set(test.finals) & set(base.finals))
    target = statistics.fmean(base.finals.values())
    ssim = {"metric": SSIM, **paired(test.ssims, base.ssims), "arms": {}}
    out: dict = {"metric": METRIC, "baseline": base.name, "target": target, "arms": {}, "seeds": seeds,
                 **paired(test.finals, base.finals), "ssim": ssim}
    for arm in arms:
        ssim["arms"][arm.name] = {"final": {str(s): arm.ssims[s] for s in sorted(arm.ssims)},
                                  "mean": statistics.fmean(arm.ssims.values()),
                                  "std": _std(list(arm.ssims.values()))}
        steps, mean, _, _ = arm.mean_curve()
        out["arms"][arm.name] = {
            "label": arm.label, "final": {str(s): arm.finals[s] for s in sorted(arm.finals)},
            "mean": statistics.fmean(arm.finals.values()), "std": _std(list(arm.finals.values())),
            "steps": steps, "mean_curve": mean.tolist(),
            "mean_first_reach": first_reach(steps, mean.tolist(), target),
            "seed_first_reach": {str(s): first_reach(c.steps, c.values, target)
                                 for s, c in sorted(arm.curves.items())},
        }
    return out


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def markdown(summary: dict) -> str:
    """The two tables of the README: final PSNR and SSIM per seed with the paired differences, and the
    step that reaches L1's final mean PSNR."""
    (test, t), (base, b) = summary["arms"].items()
    ssim = summary["ssim"]
    ts, bs = ssim["arms"][test], ssim["arms"][base]
    unit, n = "dB", len(summary["seeds"])
    tl, bl = t["label"], b["label"]
    lines = [f"| seed | {tl} PSNR | {bl} PSNR | {tl} - {bl} | {tl} SSIM | {bl} SSIM | {tl} - {bl} |",
             "|---|---|---|---|---|---|---|"]
    for seed in summary["seeds"]:
        s = str(seed)
        lines.append(f"| {seed} | {t['final'][s]:.4f} | {b['final'][s]:.4f} | "
                     f"{summary['paired_diff'][s]:+.4f} | {ts['final'][s]:.5f} | {bs['final'][s]:.5f} | "
                     f"{ssim['paired_diff'][s]:+.5f} |")
    lines.append(f"| mean ± std | {t['mean']:.4f} ± {t['std']:.4f} | {b['mean']:.4f} ± {b['std']:.4f} | "
                 f"{summary['mean_diff']:+.4f} ± {summary['std_diff']:.4f} | "
                 f"{ts['mean']:.5f} ± {ts['std']:.5f} | {bs['mean']:.5f} ± {bs['std']:.5f} | "
                 f"{ssim['mean_diff']:+.5f} ± {ssim['std_diff']:.5f} |")
    lines += ["", f"Final {summary['metric']} ({unit}) and {ssim['metric']}; {tl} ahead in "
              f"{summary['wins']} of {n} seeds in PSNR and in {ssim['wins']} of {n} in SSIM.", "",
              f"| loss | mean curve first reaches {b['label']}'s final mean ({summary['target']:.4f} {unit}) "
              f"at step | per seed |", "|---|---|---|"]
    for arm in (t, b):
        per_seed = ", ".join(f"{s}: {'never' if r is None else r}"
                             for s, r in arm["seed_first_reach"].items())
        reach = arm["mean_first_reach"]
        lines.append(f"| {arm['label']} | {'never' if reach is None else reach} | {per_seed} |")
    return "\n".join(lines) + "\n"


def plot(arms: Sequence[Arm], summary: dict, out: Path, step_unit: int, target: float | None,
         title: str) -> None:
    """Val PSNR-Y against step: per-seed lines, the min-max band and the mean; full run and second half."""
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2), dpi=120)
    xlabel = "optimizer steps" if step_unit == 1 else f"x{step_unit:,} optimizer steps"
    for ax, zoom in zip(axes, (False, True), strict=True):
        for arm, color in zip(arms, ("C0", "C1"), strict=False):
            steps, mean, low, high = arm.mean_curve()
            xs = np.array(steps) / step_unit
            keep = xs >= xs[-1] / 2 if zoom else np.ones_like(xs, dtype=bool)
            for curve in arm.curves.values():
                cx = np.array(curve.steps) / step_unit
                ck = cx >= xs[-1] / 2 if zoom else np.ones_like(cx, dtype=bool)
                ax.plot(cx[ck], np.array(curve.values)[ck], color=color, linewidth=0.7, alpha=0.35)
            ax.fill_between(xs[keep], low[keep], high[keep], color=color, alpha=0.18, linewidth=0)
            ax.plot(xs[keep], mean[keep], color=color, linewidth=2,
                    label=f"{arm.label}: mean of {len(arm.curves)} seeds (band: min-max)")
            reach = summary["arms"][arm.name]["mean_first_reach"]
            if reach is not None and (not zoom or reach / step_unit >= xs[-1] / 2):
                ax.axvline(reach / step_unit, color=color, linestyle=":", linewidth=1)
        base = summary["arms"][summary["baseline"]]
        ax.axhline(summary["target"], color="gray", linestyle="--", linewidth=1,
                   label=f"{base['label']} final mean {summary['target']:.2f} dB")
        if target is not None:
            ax.axhline(target, color="black", linestyle="-.", linewidth=0.8, label=f"{target:g} dB")
        ax.set(xlabel=xlabel, ylabel=f"{METRIC} (dB)",
               title="second half" if zoom else title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def arms_for(preset: str | None) -> tuple[str, list[str]]:
    """The swept key and its two values, PSPL first: ``loss=pspl,l1`` or ``experiment=<preset>_{pspl,l1}``."""
    return ("experiment", [f"{preset}_pspl", f"{preset}_l1"]) if preset else ("loss", ["pspl", "l1"])


def sweep_command(sweep: Path, arm_key: str, arm_values: Sequence[str], seeds: Sequence[int],
                  val_every: int | None, overrides: Sequence[str]) -> list[str]:
    """``pspl-train -m`` over the arms and seeds into ``sweep`` (CSV logs unless a logger is given)."""
    cmd = [sys.executable, "-m", "pspl_lightning.cli.train", "-m", f"{arm_key}={','.join(arm_values)}",
           f"seed={','.join(map(str, seeds))}", f"hydra.sweep.dir={sweep}"]
    if val_every is not None:
        cmd.append(f"schedule.val_every_n_steps={val_every}")
    if not any(o.startswith(("logger=", "+logger")) for o in overrides):
        cmd.append("logger=csv")
    return cmd + list(overrides)


def run_sweep(cmd: list[str], sweep: Path) -> None:
    """Run the sweep command, its output going to the console."""
    print("+", " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"the sweep failed (command above); its runs are in {sweep}")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46])
    p.add_argument("--preset", help="sweep experiment=<preset>_pspl,<preset>_l1 (e.g. edsr_baseline_x2)")
    p.add_argument("--val-every", type=int, help="validation interval in steps (default: 20 without "
                   "--preset, the preset's own with one)")
    p.add_argument("--runs", type=Path, help="a finished sweep folder: plot and tabulate it, train nothing")
    p.add_argument("--sweep-dir", type=Path, help="where to train (default: outputs/train/multiruns/"
                   "pspl_vs_l1_<time> under PSPL_ROOT or the current folder)")
    p.add_argument("--step-unit", type=int, help="x axis unit in steps (default: 1; 1000 with --preset)")
    p.add_argument("--target", type=float, help="also draw this PSNR (e.g. the paper's 34.4)")
    p.add_argument("--title", default=None)
    p.add_argument("--out", type=Path, default=Path("figures/pspl_vs_l1.png"))
    p.add_argument("--overwrite", action="store_true")
    return p.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Train (unless ``--runs``), then write the figure, the tables and the numbers; return the numbers."""
    args, overrides = parse_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        raise SystemExit(f"unknown option(s) {unknown}; pspl-train overrides look like key=value")
    outputs = [args.out, args.out.with_suffix(".md"), args.out.with_suffix(".json")]
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.overwrite:
        raise OutputExistsError(f"{', '.join(existing)} exist; pass --overwrite to replace them")
    arm_key, arm_values = arms_for(args.preset)
    if args.runs and overrides:
        raise SystemExit(f"--runs reads a finished sweep: the overrides {overrides} would have no effect")
    sweep = args.runs
    if sweep is None:
        root = Path(os.environ.get("PSPL_ROOT") or os.getcwd())
        name = f"pspl_vs_l1_{datetime.now():%Y-%m-%d_%H-%M-%S}"
        sweep = args.sweep_dir or root / "outputs" / "train" / "multiruns" / name
        val_every = args.val_every if args.val_every is not None else (None if args.preset else 20)
        run_sweep(sweep_command(sweep, arm_key, arm_values, args.seeds, val_every, overrides), sweep)
    arms = read_sweep(sweep, arm_key)
    order = {v: i for i, v in enumerate(arm_values)}
    arms.sort(key=lambda a: order.get(a.name, len(order)))
    summary = summarize(arms)
    summary["sweep"] = str(sweep)
    step_unit = args.step_unit or (1000 if args.preset else 1)
    title = args.title or f"{args.preset or 'sample set'}: {' vs '.join(a.label for a in arms)}, " \
                          f"{len(summary['seeds'])} seeds"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(arms, summary, args.out, step_unit, args.target, title)
    table = markdown(summary)
    outputs[1].write_text(table)
    outputs[2].write_text(json.dumps(summary, indent=1))
    print(table)
    print(f"wrote {', '.join(map(str, outputs))}")
    return summary


if __name__ == "__main__":
    one_line_failures()(main)(sys.argv[1:])  # a mistake (an existing output): one line, exit status 2
