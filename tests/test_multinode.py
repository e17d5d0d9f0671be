"""Two nodes on one machine: torchrun (``--nnodes 2 --nproc-per-node 1``) and SLURM's environment for
2 nodes x 1 task give the weights and metrics of ``trainer=ddp_cpu`` (two ranks on one node), and only
global rank 0 writes run files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pspl_lightning.cli.launch import launched_rank, rank_overrides, refuse_unshared_torchrun_folder
from pspl_lightning.cli.train import train
from pspl_lightning.errors import ConfigError
from tests.conftest import TINY, compose_config
from tests.helpers.fault_probes import tensor_dicts_equal

ROOT = Path(__file__).resolve().parents[1]
RUN = ["model=tiny", "logger=csv", "trainer.max_steps=6", "data.batch_size=4", "schedule.val_every_n_steps=3",
       "schedule.checkpoint_every_n_steps=3", "schedule.lr_milestones=[]", "callbacks.progress_bar=null",
       "trainer.enable_model_summary=false", "trainer=ddp_cpu"]
TWO_NODES = ["trainer.num_nodes=2", "trainer.devices=1"]


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "TORCHELASTIC_")) and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    # One thread per rank everywhere: Lightning gives each rank cores / ranks-per-node threads, 1 with two
    # ranks on a 2-core node and 2 with one rank per "node", and sums of another thread count round otherwise
    return {**env, "PSPL_ROOT": str(root), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _both(procs: list[subprocess.Popen]) -> list[str]:
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        outs.append(out)
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    return outs


def _result(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    state = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    metrics = json.loads((folder / "metrics.json").read_text())
    return state["state_dict"], {k: v for k, v in metrics.items() if "time" not in k}


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def one_node(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``trainer=ddp_cpu``: Lightning starts rank 1 itself."""
    root = tmp_path_factory.mktemp("one_node")
    folder = root / "run"
    args = [sys.executable, "-m", "pspl_lightning.cli.train", *RUN, f"data.root={sample_root}",
            f"hydra.run.dir={folder}"]
    _both([subprocess.Popen(args, cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)])
    return folder


def test_torchrun_two_nodes_equal_one_node_of_two_ranks(one_node: Path, sample_root: Path,
                                                        tmp_path: Path) -> None:
    folder, port = tmp_path / "run", _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
         "-m", "pspl_lightning.cli.train", *RUN, *TWO_NODES, f"data.root={sample_root}",
         f"hydra.run.dir={folder}"],
        cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    _both(procs)
    weights, metrics = _result(folder)
    ref_weights, ref_metrics = _result(one_node)
    assert tensor_dicts_equal(weights, ref_weights)
    assert metrics == ref_metrics
    assert _files(folder) == _files(one_node)  # rank 1 wrote no file of its own (.hydra/, log)
    assert (folder / "train.log").read_text().count("Training TinySR") == 1  # rank 0's log alone


def test_slurm_two_nodes_equal_one_node_of_two_ranks(one_node: Path, sample_root: Path,
                                                     tmp_path: Path) -> None:
    """SLURM's variables as srun sets them for 2 nodes x 1 task (MASTER_ADDR given: both "nodes" are this
    machine); the run folder is named after the job, shared by both ranks without ``hydra.run.dir``."""
    port = _free_port()
    slurm = {"SLURM_JOB_ID": "777", "SLURM_STEP_ID": "0", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "2",
             "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODELIST": "127.0.0.1",
             "SLURM_LOCALID": "0",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "pspl_lightning.cli.train", *RUN, *TWO_NODES, f"data.root={sample_root}"],
        cwd=tmp_path, env=_env(tmp_path, **slurm, SLURM_PROCID=str(rank), SLURM_NODEID=str(rank)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    _both(procs)
    (folder,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert folder.name == "slurm-777-0"
    weights, metrics = _result(folder)
    ref_weights, ref_metrics = _result(one_node)
    assert tensor_dicts_equal(weights, ref_weights)
    assert metrics == ref_metrics
    assert _files(folder) == _files(one_node)


def test_ranks_above_zero_write_no_run_files_and_torchrun_needs_a_shared_folder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_NTASKS", "SLURM_PROCID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    assert launched_rank() == 0 and rank_overrides([]) == []
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's launcher, which passes hydra.output_subdir itself
    assert rank_overrides(["hydra.output_subdir=null"]) == ["hydra/job_logging=disabled"]
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert rank_overrides([]) == ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    monkeypatch.setenv("RANK", "0")  # torchrun's variable wins
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rank_overrides([]) == []
    with pytest.raises(ConfigError, match=r"^torchrun started 2 processes: give every rank the same "
                                          r"hydra.run.dir=<shared folder> \(or torchrun --rdzv-id=<id>\)"):
        refuse_unshared_torchrun_folder(["trainer=ddp_cpu"])
    refuse_unshared_torchrun_folder(["hydra.run.dir=/shared/run"])
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job42")  # --rdzv-id: all ranks name it torchrun-job42
    refuse_unshared_torchrun_folder(["trainer=ddp_cpu"])


def test_a_resume_on_another_number_of_processes_is_refused(sample_root: Path, tmp_path: Path) -> None:
    """Preempted on 8 GPUs, requeued on 4 with the same ``trainer.devices=-1``: the config cannot tell, the
    processes that started can. One line naming both counts (the checkpoint records its world size)."""
    first = compose_config("train", [*TINY, f"data.root={sample_root}", "trainer.max_steps=2"],
                           tmp_path / "a")
    train(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["pspl_world_size"] == 1
    state["pspl_world_size"] = 8
    torch.save(state, ckpt)
    again = compose_config("train", [*TINY, f"data.root={sample_root}", "trainer.max_steps=4",
                                     f"resume={first.paths.output_dir}"], tmp_path / "b")
    with pytest.raises(ConfigError, match=r"^the checkpoint was written by a run on 8 processes and this run "
                                          r"has 1: a resume continues on 8 \(trainer.devices x "
                                          r"trainer.num_nodes\); to go on with 1, start a new run from its "
                                          r"weights with init_from=<checkpoint>$"):
        train(again)
