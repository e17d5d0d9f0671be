"""Resume: into this invocation's own folder, mid-epoch with EMA, and as a requeued SLURM job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError
from tests.conftest import TINY, compose_config
from tests.helpers.fault_probes import tensor_dicts_equal

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _cfg(root: Path, sample_root: Path, *overrides: str):
    return compose_config("train", [*TINY, f"data.root={sample_root}", *overrides], root)


def _probe(folder: Path) -> list[str]:
    return ["+callbacks.probe._target_=tests.helpers.probes.RankProbe", f"+callbacks.probe.out_dir={folder}"]


def _steps(folder: Path) -> list[int]:
    """The optimizer steps that RankProbe saw on rank 0, in order, over every run that wrote there."""
    return [json.loads(line)["step"] for line in (folder / "rank0.jsonl").read_text().splitlines()]


def test_resume_true_continues_the_folder_of_this_invocation(sample_root: Path, tmp_path: Path) -> None:
    """A run in folder X, then ``pspl-train hydra.run.dir=X resume=true``: X goes on, none under outputs/."""
    probe = tmp_path / "probe"
    first = _cfg(tmp_path, sample_root, "trainer.max_steps=2", *_probe(probe))
    train(first)  # in process, into X = paths.output_dir, as `hydra.run.dir=X` would
    run = Path(first.paths.output_dir)
    env = {**os.environ, "PSPL_ROOT": str(tmp_path), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-m", "pspl_lightning.cli.train", *TINY, f"data.root={sample_root}",
            f"hydra.run.dir={run}", "resume=true", "trainer.max_steps=4", *_probe(probe)]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert _steps(probe) == [0, 1, 2, 3]  # the command continued at step 2, not from scratch
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 4
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    runs = tmp_path / "outputs" / "train" / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no extra run folder
    assert f"Resuming {run} from {run}/checkpoints/last.ckpt" in (run / "train.log").read_text()


def _checkpoint_weights(run: Path) -> tuple[dict, dict]:
    """(the averaged weights that a checkpoint's state_dict holds under EMA, the raw weights)."""
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return state["state_dict"], state["current_model_state"]


def test_resume_mid_epoch_with_ema_equals_the_uninterrupted_run(sample_root: Path, tmp_path: Path) -> None:
    # 6 images x repeat 2 / batch 4: epochs of 3 optimizer steps; stopped at step 2, finished at 5
    common = ["trainer.max_steps=5", "trainer.val_check_interval=100", "optimizer.lr=1e-3",
              "schedule.lr_milestones=[4]", "callbacks=ema", "callbacks.ema.decay=0.5"]
    straight = _cfg(tmp_path / "a", sample_root, *common)
    train(straight)
    first = _cfg(tmp_path / "b", sample_root, *common, "+callbacks.stop._target_=tests.helpers.probes.StopAt",
                 "+callbacks.stop.step=2")
    assert train(first)["global_step"] == 2
    run, probe = Path(first.paths.output_dir), tmp_path / "probe"
    resumed = _cfg(tmp_path / "c", sample_root, *common, f"resume={run}", *_probe(probe))
    assert train(resumed)["global_step"] == 5
    assert _steps(probe) == [2, 3, 4]  # continued mid-epoch, across the epoch boundary at 3

    averaged, raw = _checkpoint_weights(run)
    averaged_a, raw_a = _checkpoint_weights(Path(straight.paths.output_dir))
    assert tensor_dicts_equal(raw, raw_a)  # bit for bit: same batches, same updates
    assert tensor_dicts_equal(averaged, averaged_a)  # the EMA state came back with the checkpoint
    assert not tensor_dicts_equal(averaged, raw)  # (the average is not the raw weights)


def test_requeued_slurm_job_continues_its_hpc_checkpoint(sample_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's SIGUSR1 handler writes ``hpc_ckpt_<n>.ckpt`` into the job's folder; the requeued job (the
    same command, same SLURM job id, no ``resume``) finds it there and continues."""
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_STEP_ID", "0")

    def job_cfg(*overrides: str):
        cfg = _cfg(tmp_path, sample_root, "trainer.max_steps=4", "trainer.val_check_interval=100", *overrides)
        with open_dict(cfg):  # the folder the Hydra app would run in
            cfg.paths.output_dir = OmegaConf.select(cfg, "hydra.run.dir")
        return cfg

    first = job_cfg("+callbacks.hpc._target_=tests.helpers.fault_probes.HpcSaveAt", "+callbacks.hpc.step=2")
    folder = Path(first.paths.output_dir)
    assert folder == tmp_path / "outputs" / "train" / "runs" / "slurm-4242-0"
    train(first)
    (folder / "checkpoints" / "last.ckpt").unlink()  # the job was killed before anything else was saved
    assert [p.name for p in folder.glob("*.ckpt")] == ["hpc_ckpt_1.ckpt"]

    probe = tmp_path / "probe"
    requeued = job_cfg(*_probe(probe))
    assert Path(requeued.paths.output_dir) == folder
    assert train(requeued)["global_step"] == 4
    assert _steps(probe) == [2, 3]  # continued from the hpc checkpoint's step 2
    assert (folder / "checkpoints" / "last.ckpt").is_file()


def test_ckpt_path_starts_a_new_run_folder_from_a_checkpoint(sample_root: Path, tmp_path: Path) -> None:
    """``ckpt_path=<file>``: the run goes on from the file's step in a folder of its own; the file's run
    folder is left as it was. With ``resume`` as well, or a missing file: one ConfigError naming the key."""
    first = _cfg(tmp_path / "a", sample_root, "trainer.max_steps=3")
    train(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    second = _cfg(tmp_path / "b", sample_root, "trainer.max_steps=5", f"ckpt_path={ckpt}")
    assert train(second)["global_step"] == 5
    assert Path(second.paths.output_dir) != Path(first.paths.output_dir)
    saved = torch.load(Path(second.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 5
    assert ckpt.read_bytes() == before  # the source run is untouched
    with pytest.raises(ConfigError, match="set either resume or ckpt_path, not both"):
        train(_cfg(tmp_path / "c", sample_root, f"ckpt_path={ckpt}", "resume=true"))
    with pytest.raises(ConfigError, match="ckpt_path=/nowhere/x.ckpt: no such checkpoint file"):
        train(_cfg(tmp_path / "d", sample_root, "ckpt_path=/nowhere/x.ckpt"))
