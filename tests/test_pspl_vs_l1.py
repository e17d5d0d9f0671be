"""scripts/pspl_vs_l1.py: the seed-averaged comparison of PSPL and L1 (numbers by hand on a made-up sweep,
and one tiny real sweep read back to the numbers its runs wrote)."""

from __future__ import annotations

import csv
import importlib.util
import json
import shlex
import sys
from pathlib import Path

import matplotlib.image
import pytest
from scipy import stats

_SPEC = importlib.util.spec_from_file_location(
    "pspl_scripts_pspl_vs_l1", Path(__file__).resolve().parents[1] / "scripts" / "pspl_vs_l1.py")
assert _SPEC is not None and _SPEC.loader is not None
pspl_vs_l1 = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = pspl_vs_l1  # dataclasses look their module up there
_SPEC.loader.exec_module(pspl_vs_l1)

# Made-up validation curves (steps 10, 20, 30) of a 2 losses x 2 seeds sweep.
CURVES = {("pspl", 1): [30.0, 31.0, 32.0], ("pspl", 2): [29.0, 31.7, 32.5],
          ("l1", 1): [28.0, 30.0, 31.5], ("l1", 2): [28.5, 30.5, 31.0]}
SSIMS = {("pspl", 1): 0.900, ("pspl", 2): 0.905, ("l1", 1): 0.901, ("l1", 2): 0.899}  # final val/ssim_y


def _fake_sweep(root: Path, key: str = "loss", prefix: str = "") -> Path:
    """A sweep folder laid out as pspl-train -m writes it, with Lightning's CSV (step index = taken - 1)."""
    for num, ((loss, seed), values) in enumerate(CURVES.items()):
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        overrides = [f"{key}={prefix}{loss}", f"seed={seed}", "logger=csv"]
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (job / "csv").mkdir()
        with (job / "csv" / "metrics.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", "train/loss", "val/psnr_y"])
            for step, value in zip((10, 20, 30), values, strict=True):
                writer.writerow([0, step - 2, 0.1, ""])
                writer.writerow([0, step - 1, "", f"{value:.6f}"])
        finals = {"val/psnr_y": values[-1], "val/ssim_y": SSIMS[loss, seed], "global_step": 30}
        (job / "metrics.json").write_text(json.dumps(finals))
    return root


def test_tables_and_first_reach_from_a_sweep_folder(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _fake_sweep(tmp_path / "sweep")
    out = tmp_path / "fig" / "cmp.png"
    summary = pspl_vs_l1.main(["--runs", str(sweep), "--out", str(out)])
    pspl, l1 = summary["arms"]["pspl"], summary["arms"]["l1"]
    assert summary["target"] == pytest.approx(31.25)  # L1's final mean: (31.5 + 31.0) / 2
    assert pspl["final"] == {"1": 32.0, "2": 32.5} and pspl["mean"] == pytest.approx(32.25)
    assert summary["paired_diff"] == pytest.approx({"1": 0.5, "2": 1.5})
    assert summary["mean_diff"] == pytest.approx(1.0) and summary["std_diff"] == pytest.approx(0.5 ** 0.5)
    assert summary["wins"] == 2
    assert pspl["mean_curve"] == pytest.approx([29.5, 31.35, 32.25]) and pspl["steps"] == [10, 20, 30]
    assert pspl["mean_first_reach"] == 20  # 31.35 >= 31.25
    assert l1["mean_first_reach"] == 30  # its own final mean, despite the CSV's rounding
    assert pspl["seed_first_reach"] == {"1": 30, "2": 20} and l1["seed_first_reach"] == {"1": 30, "2": None}
    ssim = summary["ssim"]  # SSIM's own paired differences: -0.001 and +0.006
    assert ssim["metric"] == "val/ssim_y" and ssim["arms"]["pspl"]["final"] == {"1": 0.9, "2": 0.905}
    assert ssim["paired_diff"] == pytest.approx({"1": -0.001, "2": 0.006}) and ssim["wins"] == 1
    assert ssim["mean_diff"] == pytest.approx(0.0025) and ssim["std_diff"] == pytest.approx(0.007 / 2 ** 0.5)
    assert ssim["arms"]["l1"]["mean"] == pytest.approx(0.9) and ssim["arms"]["l1"]["std"] == pytest.approx(
        0.002 / 2 ** 0.5)

    table = out.with_suffix(".md").read_text()
    assert table.startswith("| seed | PSPL PSNR | L1 PSNR | PSPL - L1 | PSPL SSIM | L1 SSIM | PSPL - L1 |\n")
    assert "| 1 | 32.0000 | 31.5000 | +0.5000 | 0.90000 | 0.90100 | -0.00100 |" in table
    assert ("| mean ± std | 32.2500 ± 0.3536 | 31.2500 ± 0.3536 | +1.0000 ± 0.7071 | 0.90250 ± 0.00354 | "
            "0.90000 ± 0.00141 | +0.00250 ± 0.00495 |") in table
    assert "PSPL ahead in 2 of 2 seeds in PSNR and in 1 of 2 in SSIM." in table
    assert "| PSPL | 20 | 1: 30, 2: 20 |" in table and "| L1 | 30 | 1: 30, 2: never |" in table
    assert table in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["mean_diff"] == pytest.approx(1.0)
    height, width = matplotlib.image.imread(out).shape[:2]
    assert width >= 1000 and height >= 400

    with pytest.raises(FileExistsError, match=r"cmp.png, .*cmp.md, .*cmp.json exist; pass --overwrite"):
        pspl_vs_l1.main(["--runs", str(sweep), "--out", str(out)])
    with pytest.raises(SystemExit, match=r"--runs reads a finished sweep: the overrides \['seed=3'\]"):
        pspl_vs_l1.main(["--runs", str(sweep), "--out", str(tmp_path / "x.png"), "seed=3"])
    (sweep / "3" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"3 \(loss=l1 seed=2\) has no metrics.json"):
        pspl_vs_l1.main(["--runs", str(sweep), "--out", str(tmp_path / "y.png")])


def test_presets_sweep_the_experiments_with_their_own_schedule(tmp_path: Path) -> None:
    assert pspl_vs_l1.parse_args([])[0].seeds == [42, 43, 44, 45, 46]  # the default: five seeds
    key, values = pspl_vs_l1.arms_for("edsr_baseline_x2")
    assert (key, values) == ("experiment", ["edsr_baseline_x2_pspl", "edsr_baseline_x2_l1"])
    configs = Path(__file__).resolve().parents[1] / "configs" / "experiment"
    assert all((configs / f"{v}.yaml").is_file() for v in values)
    cmd = pspl_vs_l1.sweep_command(tmp_path, key, values, [42, 43, 44], None, ["data.root=/d"])
    assert cmd[3:] == ["-m", "experiment=edsr_baseline_x2_pspl,edsr_baseline_x2_l1", "seed=42,43,44",
                       f"hydra.sweep.dir={tmp_path}", "logger=csv", "data.root=/d"]
    cmd = pspl_vs_l1.sweep_command(tmp_path, *pspl_vs_l1.arms_for(None), [1], 20, ["logger=[csv,wandb]"])
    assert cmd[3:] == ["-m", "loss=pspl,l1", "seed=1", f"hydra.sweep.dir={tmp_path}",
                       "schedule.val_every_n_steps=20", "logger=[csv,wandb]"]
    sweep = _fake_sweep(tmp_path / "sweep", "experiment", "edsr_baseline_x2_")
    summary = pspl_vs_l1.main(["--runs", str(sweep), "--preset", "edsr_baseline_x2", "--out",
                               str(tmp_path / "p.png")])
    assert list(summary["arms"]) == values and summary["target"] == pytest.approx(31.25)
    assert (tmp_path / "p.md").read_text().startswith("| seed | PSPL PSNR | L1 PSNR | PSPL - L1 |")


def test_runs_the_sweep_and_reads_back_what_the_runs_wrote(sample_root: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSPL_ROOT", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    sweep = tmp_path / "sweep"
    summary = pspl_vs_l1.main([
        "--seeds", "7", "--val-every", "1", "--sweep-dir", str(sweep), "--out", str(tmp_path / "f.png"),
        "model=tiny", "trainer.max_steps=2", f"data.root={sample_root}", "data.patch_size=32",
        "data.batch_size=2", "callbacks.progress_bar=null", "trainer.enable_model_summary=false"])
    for num, loss in enumerate(("pspl", "l1")):
        job = sweep / str(num)
        assert f"- loss={loss}" in (job / ".hydra" / "overrides.yaml").read_text()
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["global_step"] == 2
        arm = summary["arms"][loss]
        assert arm["final"] == {"7": metrics["val/psnr_y"]} and arm["steps"] == [1, 2]
        assert summary["ssim"]["arms"][loss]["final"] == {"7": metrics["val/ssim_y"]}
        assert arm["mean_curve"][-1] == pytest.approx(metrics["val/psnr_y"], abs=1e-4)
    assert summary["mean_diff"] == pytest.approx(summary["arms"]["pspl"]["final"]["7"]
                                                 - summary["arms"]["l1"]["final"]["7"])
    assert (tmp_path / "f.png").is_file()


def test_readme_shows_the_committed_evidence() -> None:
    """The README's "Does PSPL help?" shows the figure and the tables that pspl_vs_l1.py wrote."""
    root = Path(__file__).resolve().parents[1]
    figure, table = root / "docs" / "figures" / "pspl_vs_l1.png", root / "docs" / "figures" / "pspl_vs_l1.md"
    numbers = json.loads(figure.with_suffix(".json").read_text())
    readme = root.joinpath("README.md").read_text()
    section = readme[readme.index("## Does PSPL help?"):]
    section = section[:section.index("\n## ", 1)]
    assert "(docs/figures/pspl_vs_l1.png)" in section and matplotlib.image.imread(figure).shape[1] >= 1000
    for line in table.read_text().splitlines():
        if line.startswith("|"):
            assert line in section, f"README lacks the table line {line!r} of {table}"
    pspl, l1 = numbers["arms"]["pspl"], numbers["arms"]["l1"]
    n = len(numbers["seeds"])
    prose = " ".join(section.split())
    assert f"for each of the seeds {numbers['seeds'][0]} to {numbers['seeds'][-1]}" in prose and n >= 5
    # SSIM: wins, mean paired difference, its range and t-test
    ssim = numbers["ssim"]
    ssim_diffs = sorted(ssim["paired_diff"].values())
    assert f"weighs its pixels by: PSPL is ahead in {ssim['wins']} of {n} seeds" in prose
    assert (f"mean paired difference is {ssim['mean_diff']:+.5f} (from {ssim_diffs[0]:+.5f} to "
            f"{ssim_diffs[-1]:+.5f})") in prose
    test = stats.ttest_1samp(ssim_diffs, 0.0)
    assert f"t = {test.statistic:.2f}, p = {test.pvalue:.3f} ({n - 1} degrees of freedom)" in prose
    assert test.pvalue < 0.05 and ssim["wins"] == n  # "yes, by a small and consistent margin"
    assert f"small: {ssim['mean_diff']:.1%} of the SSIM scale" in prose
    # PSNR: the same figures
    diffs = sorted(numbers["paired_diff"].values())
    assert f"PSNR-Y: PSPL is ahead in {numbers['wins']} of {n} seeds" in prose
    assert f"mean paired difference (same seed, PSPL minus L1) is {numbers['mean_diff']:+.2f} dB" in prose
    assert f"range from {diffs[0]:.2f} to {diffs[-1]:+.2f} dB" in prose
    test = stats.ttest_1samp(diffs, 0.0)
    assert f"t = {test.statistic:.2f}, p = {test.pvalue:.2f} ({n - 1} degrees of freedom)" in prose
    assert test.pvalue > 0.05  # "not measurably"
    assert f"(std {pspl['std']:.2f} dB for PSPL, {l1['std']:.2f} dB for L1)" in prose
    ahead = [a > b for a, b in zip(pspl["mean_curve"], l1["mean_curve"], strict=True)]
    first = ahead.index(True)
    last = first + (ahead[first:] + [False]).index(False) - 1  # the first stretch where PSPL's mean is above
    assert f"above L1's from step {pspl['steps'][first]} to {pspl['steps'][last]}," in prose
    assert (f"L1's final mean ({numbers['target']:.2f} dB) at step {pspl['mean_first_reach']} and L1's at "
            f"step {l1['mean_first_reach']}") in prose
    # the earlier commit's run quoted beside it, whose L1 runs are the same
    earlier = json.loads((root / "docs" / "figures" / "pspl_vs_l1_cd97c5e.json").read_text())
    assert (f"ahead in {earlier['wins']} of 3 seeds by {earlier['mean_diff']:+.2f} ± "
            f"{earlier['std_diff']:.2f} dB") in prose
    assert earlier["arms"]["l1"]["final"] == {s: l1["final"][s] for s in earlier["arms"]["l1"]["final"]}
    # make train's figure (BENCHMARKS.md): seed 42 with one thread is the evidence's PSPL run of seed 42
    benchmarks = (root / "docs" / "BENCHMARKS.md").read_text()
    figure = benchmarks[benchmarks.index("## The `make train` figure"):]
    figure = " ".join(figure[:figure.index("\n## ", 1)].split())
    assert f"{pspl['final']['42']:.4f} dB with `OMP_NUM_THREADS=1`" in figure
    assert f"and {earlier['arms']['pspl']['final']['42']:.4f} dB (1 thread)" in figure
    finals = sorted(pspl["final"].values())
    assert f"PSPL ends between {finals[0]:.2f} and {finals[-1]:.2f} dB over seeds 42-46" in figure


def test_the_readme_command_runs_as_written() -> None:
    """README's command regenerates the committed evidence: its --out is the committed figure, so it carries
    --overwrite (without, the script refuses: FileExistsError in a fresh clone), and its seeds are the
    evidence's."""
    root = Path(__file__).resolve().parents[1]
    readme = root.joinpath("README.md").read_text()
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("python scripts/pspl_vs_l1.py")]
    args, overrides = pspl_vs_l1.parse_args(shlex.split(line)[2:])
    assert args.out == Path("docs/figures/pspl_vs_l1.png") and (root / args.out).is_file() and args.overwrite
    assert args.seeds == json.loads((root / "docs" / "figures" / "pspl_vs_l1.json").read_text())["seeds"]
    assert overrides == ["hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"]
