"""Scale-out: DDP on CPU (ddp_spawn in process, ddp as a script), Hydra multirun, W&B offline runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate

from pspl_lightning.cli.train import train
from pspl_lightning.metrics import psnr_y
from pspl_lightning.module import SRModule
from tests.conftest import TINY
from tests.helpers.checkpoints import network_from_checkpoint
from tests.helpers.fault_probes import rank_files

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _ranks(probe_dir: Path) -> dict[int, list[dict]]:
    return {int(p.stem[4:]): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(probe_dir.glob("rank*.jsonl"))}


def _cli(args: list[str], root: Path, timeout: int = 300, status: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PSPL_ROOT": str(root), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "pspl_lightning.cli.train", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == status, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ddp_script_runs_two_ranks_into_one_run_folder(sample_root: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    _cli([*TINY, f"data.root={sample_root}", "trainer=ddp_cpu", "trainer.max_steps=3", "logger=csv",
          "+callbacks.probe._target_=tests.helpers.probes.RankProbe", f"+callbacks.probe.out_dir={probe}"],
         tmp_path)
    runs = list((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(runs) == 1  # rank 1 wrote into rank 0's folder, not a new one
    assert json.loads((runs[0] / "metrics.json").read_text())["global_step"] == 3
    ranks = _ranks(probe)
    assert sorted(ranks) == [0, 1] and ranks[0] == ranks[1]


def test_multirun_jobs_in_one_process_get_complete_runs_with_own_wandb_runs(sample_root: Path,
                                                                              tmp_path: Path) -> None:
    """The basic launcher runs the jobs one after another in one process: each still gets its own folder,
    checkpoint, metrics and W&B run (test_parallel_sweep.py runs a 2x2 sweep, each job in its own process)."""
    overrides = [o for o in TINY if not o.startswith("logger=")]
    proc = _cli(["-m", *overrides, f"data.root={sample_root}", "trainer.max_steps=2", "logger=wandb",
                 "loss.alpha=0.5,2"], tmp_path, timeout=600)
    sweeps = list((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, proc.stdout[-2000:]
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    seen_runs, seen_overrides = set(), set()
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["global_step"] == 2 and "val/ssim_y" in metrics
        assert (job / "checkpoints" / "last.ckpt").is_file()
        overrides_file = (job / ".hydra" / "overrides.yaml").read_text()
        seen_overrides.add(tuple(line for line in overrides_file.splitlines() if "loss." in line))
        wandb_runs = list((job / "wandb").glob("offline-run-*"))
        assert len(wandb_runs) == 1, f"{job}: expected one W&B run, got {wandb_runs}"
        seen_runs.add(wandb_runs[0].name.rsplit("-", 1)[-1])
    assert len(seen_runs) == 2 and len(seen_overrides) == 2


def _no_wandb_login(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """No WANDB_MODE, no API key, and a home folder without a ~/.netrc login."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))


def test_wandb_is_offline_without_a_login_and_wandb_mode_wins(train_cfg, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _no_wandb_login(monkeypatch, tmp_path / "home")
    cfg = train_cfg("logger=wandb")
    assert cfg.logger.wandb.offline is True  # resolved now: neither a key nor a login
    (tmp_path / "home" / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / "home" / ".netrc").chmod(0o600)
    assert cfg.logger.wandb.offline is False  # `wandb login` wrote this
    (tmp_path / "home" / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert cfg.logger.wandb.offline is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert cfg.logger.wandb.offline is True  # WANDB_MODE wins over the key
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert cfg.logger.wandb.offline is False  # ... and over a missing one


def test_wandb_offline_run_holds_images_and_metrics(train_cfg, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _no_wandb_login(monkeypatch, tmp_path / "home")  # offline by itself: nothing tells it to be
    cfg = train_cfg("logger=wandb", "trainer.max_steps=4", "callbacks.image_panel.every_n_steps=2",
                    "logger.wandb.tags=[test]", "logger.wandb.notes=offline check")
    metrics = train(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run = runs[0]
    panels = sorted((run / "files" / "media" / "images" / "train").glob("panel_*.png"))  # the image files
    assert len(panels) == 2  # steps 2 and 4
    from PIL import Image

    w, h = Image.open(panels[0]).size
    assert (w, h) == (4 * 32, 4 * 32)  # 4 rows of [LR up, SR, HR, weight map] patches of 32 px
    record = _inspect_wandb_run(run)
    assert record["state"] == "finished" and record["tags"] == ["test"] and record["notes"] == "offline check"
    summary = record["summary"]
    assert summary["final/val/psnr_y"] == pytest.approx(metrics["val/psnr_y"])
    assert summary["pspl/sigma"] == pytest.approx(0.4)  # (3 + 1) / 10: the last step's sigma
    assert {"train/loss", "train/l1", "train/lr", "pspl/weight_mean", "val/ssim_y"} <= set(summary)
    assert summary["train/panel"]["captions"] == ["LR | SR | HR | weight"]
    assert record["config"]["loss"]["alpha"] == 1.0 and record["config"]["model"]["n_feats"] == 8
    assert "trainer.max_steps=4" in record["name"]


def _inspect_wandb_run(run_dir: Path) -> dict:
    """Everything an offline W&B run recorded, read back with W&B's own `wandb leet inspect`."""
    wandb_file = next(run_dir.glob("*.wandb"))
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(wandb_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_sweep_and_launcher_configs_compose(train_cfg) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = train_cfg("hparams_search=pspl_optuna", "hydra/launcher=slurm", "trainer=ddp",
                    "trainer.num_nodes=2")
    sweeper, launcher = cfg.hydra.sweeper, cfg.hydra.launcher
    assert "optuna" in sweeper._target_.lower() and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"loss.alpha", "loss.beta", "loss.max_weight"}
    assert sweeper.n_trials == 20  # README: 20 trials
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    assert issubclass(get_class(launcher._target_), SlurmLauncher)  # submitit's, reporting dead jobs as NaN
    assert launcher.nodes == 2 and launcher.tasks_per_node == 8


def test_sweep_jobs_are_named_after_their_overrides_and_grouped_by_sweep(
        train_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job's W&B run is named after its overrides and grouped under the sweep's folder name; several
    loggers at once (``logger=[csv,wandb]``) are built side by side."""
    from pspl_lightning.cli import launch
    from pspl_lightning.cli.build import build_group

    cfg = train_cfg("logger=[csv,wandb]")
    monkeypatch.setattr(launch, "hydra_runtime", lambda: (True, "loss.alpha=0.5", "2026-11-29_04-00-00"))
    launch.adapt_to_launch(cfg)
    assert cfg.logger.wandb.name == "loss.alpha=0.5" and cfg.logger.wandb.group == "2026-11-29_04-00-00"
    loggers = build_group(cfg.logger)
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger", "WandbLogger"]
    assert loggers[1]._wandb_init["name"] == "loss.alpha=0.5"
    assert loggers[1]._wandb_init["group"] == "2026-11-29_04-00-00"
    single = train_cfg("logger=wandb", "logger.wandb.group=mine")  # a group the user set is kept
    launch.adapt_to_launch(single)
    assert single.logger.wandb.group == "mine"


@pytest.mark.slow
def test_optuna_search_runs_on_cpu(sample_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    overrides = [o for o in TINY if not o.startswith("logger=")]
    _cli(["-m", "hparams_search=pspl_optuna", "hydra.sweeper.n_trials=2", *overrides, "logger=none",
          f"data.root={sample_root}", "trainer.max_steps=2"], tmp_path, timeout=600)
    results = next((tmp_path / "outputs" / "train" / "multiruns").glob("*/optimization_results.yaml"))
    text = results.read_text()
    assert "best_params" in text and "loss.alpha" in text and "best_value" in text


@pytest.mark.slow
def test_more_ranks_than_validation_images_does_not_hang(train_cfg) -> None:
    """3 ranks, 2 validation images: the idle rank runs a padding batch that is not scored."""
    cfg = train_cfg("trainer=ddp_cpu", "trainer.devices=3", "trainer.strategy=ddp_spawn",
                    "trainer.max_steps=2", "trainer.val_check_interval=2", "data.batch_size=2")
    metrics = train(cfg)
    assert metrics["global_step"] == 2
    # the synced value is the mean over the 2 images, each counted once, of the final weights
    net = network_from_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("validate")
    with torch.no_grad():
        scores = [psnr_y(net(SRModule.to_float((lr,))[0]).float(), hr, 2).item()
                  for lr, hr in dm.val_dataloader()[0]]
    assert len(scores) == 2
    assert metrics["val/psnr_y"] == pytest.approx(sum(scores) / 2, abs=1e-6)


def test_sweep_jobs_spawn_their_ddp_ranks_and_a_failed_job_returns_nan(sample_root: Path,
                                                                        tmp_path: Path) -> None:
    """``-m`` with ``trainer=ddp_cpu`` (strategy ddp): every job runs ddp_spawn with 2 ranks and says so; a
    job with a bad value and a job that diverges inside its ranks each return NaN, the last job completes."""
    overrides = [o for o in TINY if not o.startswith("logger=")]
    returns = tmp_path / "returns.jsonl"
    proc = _cli(["-m", *overrides, f"data.root={sample_root}", "trainer=ddp_cpu", "trainer.max_steps=2",
                 "logger=none", "loss=l1", "loss._target_=tests.helpers.probes.NaNOnCall",
                 "data.batch_size=0,4", "+loss.bad_call=1,99",  # batch 0: rejected; NaN loss at call 1
                 "+callbacks.strategy._target_=tests.helpers.fault_probes.StrategyProbe",
                 "+callbacks.strategy.out_dir=${paths.output_dir}/strategy",
                 "+hydra.callbacks.returns._target_=tests.helpers.fault_probes.ReturnRecorder",
                 f"+hydra.callbacks.returns.path={returns}"], tmp_path, timeout=600, status=4)
    printed = proc.stdout + proc.stderr  # status 4: a sweep with failed jobs (its table says which)
    assert "Multirun with trainer.strategy=ddp: using ddp_spawn" in printed
    assert printed.count("Invalid configuration: data.batch_size=0") == 2
    assert "Training stopped: non-finite training loss nan at step 1" in printed

    jobs = {tuple(o for o in r["overrides"] if "bad_call" in o or "batch_size" in o): r
            for r in map(json.loads, returns.read_text().splitlines())}
    assert len(jobs) == 4 and {r["status"] for r in jobs.values()} == {"COMPLETED"}  # none raised
    for key in [("data.batch_size=0", "+loss.bad_call=1"), ("data.batch_size=0", "+loss.bad_call=99"),
                ("data.batch_size=4", "+loss.bad_call=1")]:
        assert math.isnan(jobs[key]["value"]), key
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    done = [p for p in sweep.iterdir() if (p / "metrics.json").is_file()]
    assert len(done) == 1  # the one job that neither was rejected nor diverged
    metrics = json.loads((done[0] / "metrics.json").read_text())
    assert metrics["global_step"] == 2
    assert jobs[("data.batch_size=4", "+loss.bad_call=99")]["value"] == metrics["val/psnr_y"]
    for job in sweep.iterdir():  # what each job that trained really ran: ddp_spawn, 2 ranks
        if (job / "strategy").is_dir():
            ranks = rank_files(job / "strategy")
            assert sorted(ranks) == [0, 1]
            assert {json.dumps(r, sort_keys=True) for r in ranks.values()} == {json.dumps(
                {"launcher": "_MultiProcessingLauncher", "start_method": "spawn", "strategy": "DDPStrategy",
                 "world": 2}, sort_keys=True)}
    assert sum((job / "strategy").is_dir() for job in sweep.iterdir()) == 2


def test_tests_never_inherit_the_callers_wandb_mode(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "online", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = "import os, tests.conftest; print(os.environ['WANDB_MODE'])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "disabled"
