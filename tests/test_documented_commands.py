"""Every command README.md and docs/ show is either run here as written (cheap ones in the default suite,
the rest under the slow marker), with its exit status and the claims around it checked, or named with the
reason it cannot run on a CPU in reasonable time. A first run and its lines are counted.

The ``pspl-*`` commands run through tests/helpers/cli_runner.py (each in a process of its own, forked after
the heavy imports), in a folder of their own with ``PSPL_ROOT`` there and the session's sample set at
``data/sample``, where the default config looks for it; ``python scripts/...`` commands run as written.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_WORDS = ("pspl-train", "pspl-eval", "pspl-upscale", "pspl-export", "pspl-data", "python", "make",
                 "srun", "mkdir", ".venv/bin/pytest")

# Why a documented command is not run here, by pattern (the first that matches).
NOT_RUN = [
    (r"/data\b|\$DIV2K|s3://",
     "needs a dataset a test cannot download (DIV2K, DF2K, LSDIR, benchmarks in /data)"),
    (r"mypkg\.", "tests/test_developing.py runs it as written, with a package mypkg of its own"),
    (r"/path/to/", "needs a file of the user's (VGG19's ImageNet weights): tests/test_gan.py trains the "
                   "recipe with a VGG19 state dict it writes itself"),
    (r"trainer=(gpu|ddp)\b|^srun |gpus_per_job|gpu_check|--compile|bf16|-- trainer=gpu",
     "needs a GPU or a cluster"),
    (r"model=edsr |hparams_search|experiment=|model=(swinir_light|spandrel) |model=hat_s model.window_size"
     r"|loss.alpha=0.3,1,3 |seed=1,2,3,4|pspl_vs_l1.py --out docs",
     "hours on a CPU (README: GPU commands; the figure's sweep takes 40 minutes of 2 cores)"),
    (r"\.\.\.|<[^>]+>|\[seed=0\]", "a pattern, not a command: '...', '<...>' and '[...]' stand for the "
                                   "user's own values"),
    (r"^make (test|lint)|pytest", "the test suite itself: CI runs it"),
    (r"^make train", "the README figure: tests/test_readme.py (slow) runs the same training"),
    (r"^python scripts/bench_",
     "benchmarks: tests/test_bench_scripts.py and tests/test_bench_infer.py run them at small sizes"),
    (r"ckpt=\[x2.ckpt,x3.ckpt", "needs a trained run per scale: tests/test_eval.py evaluates two scales"),
]
# Run here as written: the cheap ones in the default suite, the others under the slow marker.
DEFAULT = {"pspl-train loss.alpha=0 loss.beta=0"}
SLOW = {
    "pspl-train", "pspl-train loss=l1 logger=csv", "pspl-train loss.base=charbonnier loss.max_weight=4",
    "pspl-train debug=fast", "pspl-train trainer=ddp_cpu",
    "pspl-train -m hydra/launcher=local_parallel hydra.launcher.n_jobs=2 trainer=cpu seed=1,2",
    "pspl-train degradation=bd data.scale=3", "pspl-train degradation=dn data.scale=3",
    "pspl-train degradation=dn data.scale=3 degradation.sigma=50",
    "pspl-train degradation=realistic data.scale=4",
    "pspl-train degradation=realistic data.scale=4 degradation.stage2.enabled=false",
    "pspl-train model=span loss=l1 debug=fast logger=csv", "pspl-train model=span debug=fast logger=csv",
    "pspl-train model=hat_s model.depths=[6,6,6,6] model.num_heads=[6,6,6,6] debug=fast",
    "pspl-upscale ckpt=last.ckpt input=photos/ output=sr/",
    "pspl-upscale ckpt=last.ckpt input=photo.jpg output=sr/",
    "pspl-export ckpt=last.ckpt output=edsr_x2.safetensors",
    "pspl-upscale ckpt=edsr_x2.pth input=photos/ output=sr/ tile=512 self_ensemble=true",
    "pspl-eval ckpt=edsr_x2.pth model=edsr_baseline scales=[2]",
    "python scripts/plot_pace.py --out figures/",
    "python scripts/plot_pace.py --steps 0 999 4999 29999 --image my_photo.png --out figures/my_photo "
    "--overwrite",
}


def documented_commands() -> dict[str, list[str]]:
    """Every command line of the code blocks of README.md and docs/*.md (continuations joined, comments
    dropped) -> the files that show it."""
    found: dict[str, list[str]] = {}
    for doc in DOCS:
        for block in re.findall(r"```\w*\n(.*?)```", doc.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                command = " ".join(re.split(r"\s+#\s", line.strip())[0].split())
                if command.split(" ")[0] in COMMAND_WORDS:
                    found.setdefault(command, []).append(doc.name)
    return found


def why_not_run(command: str) -> str | None:
    return next((reason for pattern, reason in NOT_RUN if re.search(pattern, command)), None)


def test_every_documented_command_is_run_or_has_a_reason() -> None:
    commands = documented_commands()
    assert len(commands) > 60
    unaccounted = [c for c in commands if c not in DEFAULT | SLOW and why_not_run(c) is None]
    assert unaccounted == [], unaccounted
    run_but_excused = [c for c in DEFAULT | SLOW if why_not_run(c) is not None]
    assert run_but_excused == [], run_but_excused
    prose = "".join(doc.read_text() for doc in DOCS)  # a command may be shown in a sentence, in backticks
    assert sorted(c for c in DEFAULT | SLOW if c not in commands and f"`{c}`" not in prose) == []


def _home(root: Path, sample_root: Path) -> Path:
    """A user's folder: PSPL_ROOT, with the sample set where the default config looks for it."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "sample").symlink_to(sample_root)
    return root


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_FULL_ERROR"))}
    return {**env, "PSPL_ROOT": str(root), "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), **extra}


def run_commands(base: Path, cases: dict[str, tuple[str, Path, dict[str, str]]]
                 ) -> dict[str, tuple[int, str]]:
    """Run ``pspl-*`` command lines (name -> (command, folder, environment)) through the forking runner;
    name -> (exit status, stdout and stderr together)."""
    spec = {}
    for name, (command, cwd, env) in cases.items():
        args = shlex.split(command)
        spec[name] = {"entry": args[0].removeprefix("pspl-"), "args": args[1:], "cwd": str(cwd),
                      "out": str(base / f"{name}.out"), "env": env}
    (base / "cases.json").write_text(json.dumps(spec))
    runner = subprocess.run([sys.executable, "-m", "tests.helpers.cli_runner", str(base / "cases.json")],
                            cwd=ROOT, env=_env(base), capture_output=True, text=True, timeout=3000)
    assert runner.returncode == 0, runner.stdout[-2000:] + runner.stderr[-2000:]
    status = json.loads((base / "cases.json.status").read_text())
    return {name: (status[name], (base / f"{name}.out").read_text()) for name in cases}


@pytest.fixture(scope="module")
def cheap(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> dict[str, tuple[int, str, Path]]:
    base = tmp_path_factory.mktemp("documented")
    first, mistake = _home(base / "first", sample_root), _home(base / "mistake", sample_root)
    cases = {"first_run": ("pspl-train trainer.max_steps=2", first, _env(first, WANDB_MODE="offline")),
             "sigma": ("pspl-train loss.alpha=0 loss.beta=0", mistake, _env(mistake))}
    done = run_commands(base, cases)
    return {name: (*done[name], cases[name][1]) for name in cases}


def test_a_first_run_is_quiet(cheap) -> None:
    """README: `pspl-train trainer.max_steps=2` on a fresh folder, W&B offline (no key). Each line once,
    only lines that say something: W&B's offline run in one line (where, how to upload), Lightning's lines
    once, no seed, no logger version, the loss in 4 significant digits."""
    status, out, root = cheap["first_run"]
    lines = out.splitlines()
    assert status == 0, out[-3000:]
    assert len(lines) <= 24, out  # was 60, 34 of them wandb's
    (run,) = (root / "outputs" / "train" / "runs").iterdir()
    (wandb_line,) = [ln for ln in lines if "W&B" in ln or "wandb" in ln.lower()]
    (offline,) = (run / "wandb").glob("offline-run-*")
    assert wandb_line.endswith(f"W&B run saved offline in {offline}; upload it with: wandb sync {offline}")
    for said_once in ("GPU available: False, used: False", "Training EDSR with PSPLLoss for 2 steps",
                      "`Trainer.fit` stopped: `max_steps=2` reached.",
                      "Final validation at step 2: val/psnr_y"):
        assert sum(said_once in ln for ln in lines) == 1, (said_once, out)
    for unsaid in ("Seed set", "TPU available", "v_num", "INFO: ", "wandb: ", "fontManager", "LeafSpec",
                   "litlogger"):
        assert unsaid not in out, (unsaid, out)
    loss = re.search(r"train/loss: *\n? *([-+.\deE]+)", out)
    assert loss is not None and len(loss.group(1).replace(".", "").split("e")[0].lstrip("0")) == 4, out


def test_the_readme_mistake_answers_in_one_line_and_leaves_no_folder(cheap) -> None:
    """README, Training: `pspl-train loss.alpha=0 loss.beta=0` answers with "PSPL sigma = loss.alpha * (step
    + 1) / loss.step_unit + loss.beta must stay > 0 ..." and leaves no run folder."""
    status, out, root = cheap["sigma"]
    assert status == 2 and len(out.splitlines()) == 1, out
    assert "PSPL sigma = loss.alpha * (step + 1) / loss.step_unit + loss.beta must stay > 0" in out
    assert not (root / "outputs").exists()


def _photo(path: Path, size: tuple[int, int] = (40, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _metrics(root: Path) -> dict:
    (run,) = (root / "outputs" / "train" / "runs").iterdir()
    return json.loads((run / "metrics.json").read_text())


def _train_as_written(tmp_path: Path, sample_root: Path, commands: list[str]) -> dict[str, Path]:
    """Each training command in a user's folder of its own, as written; command -> that folder."""
    homes = {c: _home(tmp_path / f"t{i}", sample_root) for i, c in enumerate(commands)}
    done = run_commands(tmp_path, {f"t{i}": (c, homes[c], _env(homes[c])) for i, c in enumerate(commands)})
    for i, command in enumerate(commands):
        assert done[f"t{i}"][0] == 0, (command, done[f"t{i}"][1][-3000:])
        if not command.startswith("pspl-train -m"):
            assert _metrics(homes[command])["val/psnr_y"] > 0, command
    return homes


CHAIN = ["pspl-upscale ckpt=last.ckpt input=photos/ output=sr/",
         "pspl-upscale ckpt=last.ckpt input=photo.jpg output=sr/",
         "pspl-export ckpt=last.ckpt output=edsr_x2.safetensors",
         "pspl-upscale ckpt=edsr_x2.pth input=photos/ output=sr/ tile=512 self_ensemble=true",
         "pspl-eval ckpt=edsr_x2.pth model=edsr_baseline scales=[2]"]
SCRIPTS = sorted(c for c in SLOW if c.startswith("python "))
TRAININGS = sorted(c for c in SLOW if c.startswith("pspl-train") and c != "pspl-train debug=fast")


def test_the_slow_commands_are_split_between_the_slow_tests() -> None:
    assert set(CHAIN) | set(SCRIPTS) | set(TRAININGS) | {"pspl-train debug=fast"} == SLOW


@pytest.mark.slow
def test_the_documented_trainings_run_as_written(tmp_path: Path, sample_root: Path) -> None:
    """The sample-set trainings of 200 steps, the degradations, the zoo's debug runs, a 2-job CPU sweep."""
    homes = _train_as_written(tmp_path, sample_root, TRAININGS)
    assert _metrics(homes["pspl-train"])["val/psnr_y"] > 32.92 + 0.3  # README: about 33.5 dB vs 32.92 bicubic
    (l1_run,) = (homes["pspl-train loss=l1 logger=csv"] / "outputs" / "train" / "runs").iterdir()
    assert (l1_run / "csv" / "metrics.csv").is_file()  # README: metrics in <run>/csv/metrics.csv
    jobs = homes["pspl-train -m hydra/launcher=local_parallel hydra.launcher.n_jobs=2 trainer=cpu seed=1,2"]
    (sweep,) = (jobs / "outputs" / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file()) == ["0", "1"]


@pytest.mark.slow
def test_a_fast_run_then_upscale_export_and_eval_as_written(tmp_path: Path, sample_root: Path) -> None:
    """README's `pspl-train debug=fast`, then the docs' upscale, export and eval commands in the folder
    that holds its last.ckpt, one after the other."""
    homes = _train_as_written(tmp_path / "train", sample_root, ["pspl-train debug=fast"])
    assert _metrics(homes["pspl-train debug=fast"])["global_step"] == 4  # README: four steps of everything
    user = tmp_path / "user"
    user.mkdir()
    (fast_run,) = (homes["pspl-train debug=fast"] / "outputs" / "train" / "runs").iterdir()
    shutil.copy(fast_run / "checkpoints" / "last.ckpt", user / "last.ckpt")
    _photo(user / "photos" / "a.png")
    _photo(user / "photo.jpg")
    _photo(user / "data" / "benchmarks" / "Set5" / "HR" / "baby.png", (24, 24))  # pspl-eval's default root
    setup = run_commands(user, {"pth": ("pspl-export ckpt=last.ckpt output=edsr_x2.pth", user, _env(user))})
    assert setup["pth"][0] == 0, setup["pth"][1]
    for i, command in enumerate(CHAIN):  # one after the other: the fourth would write over the first's PNG
        status, out = run_commands(user, {f"c{i}": (command, user, _env(user))})[f"c{i}"]
        if i == 3:
            assert status == 2 and "output file(s) exist" in out, (command, out)  # kept unless overwrite=true
            assert len(out.splitlines()) == 1, out
            continue
        assert status == 0, (command, out[-3000:])
    for written in ("a.png", "photo.png"):  # docs: photo.jpg -> sr/photo.png; x2
        assert Image.open(user / "sr" / written).size == (80, 64)
    assert (user / "edsr_x2.safetensors").is_file()
    assert "Benchmark set(s) not under" in out and "Set5" in out  # the default sets: the one present


@pytest.mark.slow
def test_the_documented_scripts_run_as_written(tmp_path: Path) -> None:
    user = tmp_path / "user"
    _photo(user / "my_photo.png", (300, 260))
    for command in SCRIPTS:
        args = shlex.split(command)  # the script from the repository, its outputs in the user's folder
        proc = subprocess.run([sys.executable, str(ROOT / args[1]), *args[2:]], cwd=user, env=_env(user),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stdout[-2000:] + proc.stderr[-2000:])
    assert (user / "figures" / "pace_curves.png").is_file()
    assert (user / "figures" / "my_photo" / "pace_maps.png").is_file()


# README: the `make train` figure of each CPU family (torch's vector kernels), with torch's 2 threads
MAKE_TRAIN_FIGURES = {"AVX2": (33.4737, 0.9110), "AVX512": (33.4151, 0.9130)}


def test_the_readme_names_the_make_train_figure_of_each_cpu_family() -> None:
    """Both figures are in the README, the AVX2 one is the recorded CPU run (scripts/gpu_check.py), and
    ATEN_CPU_CAPABILITY=avx2 makes torch's own kernels AVX2 (the slow test shows the figure stays)."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    avx2, avx512 = MAKE_TRAIN_FIGURES["AVX2"], MAKE_TRAIN_FIGURES["AVX512"]
    assert f"val/psnr_y = {avx2[0]}, val/ssim_y = {avx2[1]:.4f}" in readme
    assert f"with AVX-512 it ends at `val/psnr_y = {avx512[0]}, val/ssim_y = {avx512[1]:.4f}`" in readme
    assert "There `ATEN_CPU_CAPABILITY=avx2` alone does not bring the AVX2 figure back: the run still ends " \
           f"at {avx512[0]}" in readme
    import torch

    native = torch.backends.cpu.get_cpu_capability()
    if native not in MAKE_TRAIN_FIGURES:
        pytest.skip(f"this CPU's kernels are {native}")
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    forced = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"},
                            capture_output=True, text=True, timeout=120)
    assert forced.stdout.strip() == "AVX2", forced.stderr


@pytest.mark.slow
def test_make_train_gives_the_figure_of_this_cpu_family(tmp_path: Path, sample_root: Path) -> None:
    """`make train` (pspl-train) with 2 threads: this CPU family's figure, also with torch's kernels forced to
    AVX2 (measured 2026-12-06 on AVX-512: 33.4151 both ways; oneDNN's convolutions choose their own)."""
    import torch

    native = torch.backends.cpu.get_cpu_capability()
    if native not in MAKE_TRAIN_FIGURES:
        pytest.skip(f"this CPU's kernels are {native}: no recorded figure")
    runs = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2"}}
    homes = {name: _home(tmp_path / name, sample_root) for name in runs}
    done = run_commands(tmp_path, {name: ("pspl-train", homes[name], _env(homes[name], OMP_NUM_THREADS="2",
                                                                        **extra))
                                   for name, extra in runs.items()})
    for name, expected in (("native", MAKE_TRAIN_FIGURES[native]), ("avx2", MAKE_TRAIN_FIGURES[native])):
        assert done[name][0] == 0, done[name][1][-3000:]
        metrics = _metrics(homes[name])
        assert (round(metrics["val/psnr_y"], 4), round(metrics["val/ssim_y"], 4)) == expected, name
