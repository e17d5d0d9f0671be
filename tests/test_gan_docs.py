"""README's "Real-world SR" figures are the ones the evidence script recorded
(docs/figures/gan_pspl_vs_l1.*)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Real-world SR")
    return readme[start : readme.index("\n## ", start + 1)]


def test_readme_real_world_sr_numbers_are_the_recorded_ones() -> None:
    report = json.loads((ROOT / "docs" / "figures" / "gan_pspl_vs_l1.json").read_text())
    section, summary, n = _section(), report["summary"], len(report["seeds"])
    rows = {m.group(1): m.group(2, 3) for m in re.finditer(r"^\| (L1|PSPL) \| ([0-9.]+) \| ([0-9.]+) \|",
                                                           section, re.MULTILINE)}
    psnr, ssim = summary["psnr_y"], summary["ssim_y"]
    assert rows == {"L1": (f"{psnr['l1_mean']:.3f}", f"{ssim['l1_mean']:.4f}"),
                    "PSPL": (f"{psnr['pspl_mean']:.3f}", f"{ssim['pspl_mean']:.4f}")}
    ahead = f"{summary['psnr_y']['pspl_ahead']} of {n} / {summary['ssim_y']['pspl_ahead']} of {n}"
    assert ahead in section
    start = report["psnr_start"]
    assert f"{start['psnr_y']:.2f} dB PSNR-Y" in section and f"SSIM-Y {start['ssim_y']:.4f}" in section
    assert f"{report['gan_steps']} GAN steps" in section and f"for {report['psnr_steps']} steps" in section
    assert f"EMA decay {report['ema_decay']}" in section
    loss_d = summary["last_loss_d"]
    assert f"was {loss_d['min']:.3f} to {loss_d['max']:.3f} in every run" in " ".join(section.split())
    # each seed's mean is the mean of the per-seed values
    for key in ("psnr_y", "ssim_y"):
        for arm in ("l1", "pspl"):
            values = [report["runs"][arm][str(s)][key] for s in report["seeds"]]
            assert abs(sum(values) / n - summary[key][f"{arm}_mean"]) < 1e-12
    finals = [r["psnr_y"] for arm in report["runs"].values() for r in arm.values()] + [start["psnr_y"]]
    assert max(finals) - min(finals) < 0.05  # "within a few hundredths of a dB of the others and the start"
    if "RANDOM" in report["vgg"]:  # the README must say the perceptual term had no ImageNet weights
        assert "random weights" in " ".join(section.split()).replace("**", "")
    assert (ROOT / "docs" / "figures" / "gan_pspl_vs_l1.png").is_file()
