"""What a user reads: a file given as ``ckpt=`` that is no checkpoint says what it is, pspl-eval's default
sets evaluate what is there, the scripts end an existing output in one line, library notices are gone, and
an out-of-memory error in validation gets the validation advice (docs/FAULTS.md names these tests)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pspl_lightning.archs import TinySR
from pspl_lightning.cli.runtime_errors import OutOfMemory
from pspl_lightning.errors import ConfigError, UserError
from pspl_lightning.inference.loading import FORMAT, WeightsError, load_network
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
ONNX_HEAD = b"\x08\x09\x12\x07pytorch\x1a\x062.14.1:"  # how torch's exporter begins a ModelProto


def _weights_file(path: Path) -> Path:
    """A pspl-export file of an x2 TinySR (4 features, 1 layer): a network built in a millisecond."""
    net = TinySR(2, n_feats=4, n_layers=1)
    model = {"_target_": "pspl_lightning.archs.TinySR", "n_feats": 4, "n_layers": 1}
    torch.save({"format": FORMAT, "state_dict": net.state_dict(), "model": model, "scale": 2}, path)
    return path


PAYLOAD = bytes(range(7, 71))  # fixed: test ids must be the same in every xdist worker


@pytest.mark.parametrize(("name", "content", "says"), [
    ("model.onnx", ONNX_HEAD + PAYLOAD, "is an ONNX model (for onnxruntime, chaiNNer), not a PyTorch"),
    ("renamed.pth", ONNX_HEAD + PAYLOAD, "is an ONNX model"),
    ("notes.ckpt", b"epoch 3: loss 0.01\n", "is a text file, not a checkpoint or weights file"),
    ("empty.pth", b"", "is an empty file"),
    ("array.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'", "is a NumPy array"),
    ("noise.ckpt", bytes(range(256)) * 4, "is not a PyTorch checkpoint or weights file"),
], ids=["onnx", "onnx-renamed", "text", "empty", "numpy", "noise"])
def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path: Path, name: str, content: bytes,
                                                       says: str) -> None:
    """pspl-eval, pspl-upscale and pspl-export read through load_network, init_from through warm_start."""
    from pspl_lightning.export import export_model
    from pspl_lightning.inference.warm_start import read_weights

    path = tmp_path / name
    path.write_bytes(content)
    wanted = f"{path} cannot be read: it {says}"
    for read in (load_network, read_weights, lambda p: export_model(p, tmp_path / "out.pth")):
        with pytest.raises(UserError) as caught:
            read(path)
        line = str(caught.value)
        assert wanted in line and len(line.splitlines()) == 1 and len(line) - len(str(tmp_path)) < 200, line
        assert "weights_only" not in line and "IndexError" not in line
    assert not (tmp_path / "out.pth").exists()


def test_eval_names_its_scales_key_for_a_bare_state_dict(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from pspl_lightning.cli.eval import load_networks

    torch.save(TinySR(2, n_feats=4, n_layers=1).state_dict(), tmp_path / "bare.pth")
    model = {"_target_": "pspl_lightning.archs.TinySR", "n_feats": 4, "n_layers": 1}
    cfg = OmegaConf.create({"ckpt": str(tmp_path / "bare.pth"), "scales": None, "device": "cpu",
                            "model": model})
    with pytest.raises(WeightsError, match=r"bare.pth is a bare state_dict without a scale: pass "
                                           r"scales=<2\|3\|4>$"):
        load_networks(cfg)


def _benchmark(root: Path, *names: str) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        (root / name / "HR").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / name / "HR" / "a.png")
    return root


def test_eval_with_the_default_sets_evaluates_those_present(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from rich.console import Console

    from pspl_lightning.cli.eval import evaluate

    ckpt, bench = _weights_file(tmp_path / "x2.pth"), _benchmark(tmp_path / "bench", "Set5", "Urban100")
    cfg = compose_config("eval", [f"ckpt={ckpt}", f"benchmark_root={bench}", "device=cpu"], tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="pspl_lightning"):
        summary = evaluate(cfg, console=Console(file=open(os.devnull, "w")))  # noqa: SIM115
    assert [(s.set, s.images) for s in summary] == [("Set5", 1), ("Urban100", 1)]
    assert [r.getMessage() for r in caplog.records] == [
        f"Benchmark set(s) not under {bench}, skipped: Set14, B100, Manga109 (evaluating Set5, Urban100)"]
    named = compose_config("eval", [f"ckpt={ckpt}", f"benchmark_root={bench}", "sets=[Set5,Set14]"],
                           tmp_path / "named")
    with pytest.raises(FileNotFoundError, match="benchmark set 'Set14' not found under"):
        evaluate(named)  # a set named on the command line must exist
    empty = compose_config("eval", [f"ckpt={ckpt}", f"benchmark_root={_benchmark(tmp_path / 'none')}"],
                           tmp_path / "none_out")
    (tmp_path / "none").mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match="none of the benchmark sets Set5, Set14, B100, Urban100, "
                                                "Manga109 is under"):
        evaluate(empty)


def test_eval_default_sets_are_the_configs() -> None:
    from pspl_lightning.cli.eval import DEFAULT_SETS

    cfg = compose_config("eval", ["ckpt=x"], Path("/nonexistent"))
    assert tuple(cfg.sets) == DEFAULT_SETS


def _script(name: str):
    """The script as a module (its ``main``), loaded from scripts/ as ``python scripts/<name>`` runs it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), ROOT / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["plot_pace.py", "pspl_vs_l1.py"])
def test_a_script_given_an_existing_output_ends_in_one_line(tmp_path: Path, script: str,
                                                             capfd: pytest.CaptureFixture) -> None:
    """What ``if __name__ == "__main__"`` runs: the main through one_line_failures (exit 2, one line)."""
    from pspl_lightning.cli.failures import one_line_failures

    out = tmp_path / ("figs" if script == "plot_pace.py" else "cmp.png")
    existing = out / "pace_curves.png" if script == "plot_pace.py" else out
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_text("a figure of the user's")
    args = ["--out", str(out)] + (["--runs", str(tmp_path)] if script == "pspl_vs_l1.py" else [])
    main = _script(script).main
    capfd.readouterr()
    with pytest.raises(SystemExit) as ended:
        one_line_failures()(main)(args)
    captured = capfd.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert ended.value.code == 2 and len(lines) == 1 and str(existing) in lines[0], lines
    assert "pass --overwrite" in lines[0] and existing.read_text() == "a figure of the user's"
    assert "__main__" in (ROOT / "scripts" / script).read_text().split("one_line_failures()(main)")[0]


def test_library_notices_are_filtered_by_their_exact_words() -> None:
    """torch's meshgrid notice (SwinIR and HAT in spandrel call it the old way), the INFO lines of
    Lightning's seed, matplotlib and alembic: filtered after quiet_libraries() (each entry point calls it)."""
    from pspl_lightning.cli.lightning_notices import quiet_libraries

    # torch says it once per process (an earlier test may have had it): its exact words are sent here
    notice = ("torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument. "
              "(Triggered internally at /pytorch/aten/src/ATen/native/TensorShape.cpp:4326.)")
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        warnings.warn(notice, UserWarning, stacklevel=1)
        before = sum("torch.meshgrid" in str(w.message) for w in seen)
        quiet_libraries()
        warnings.warn(notice, UserWarning, stacklevel=1)
        warnings.warn("torch.meshgrid: another notice", UserWarning, stacklevel=1)
    assert (before, sum("torch.meshgrid" in str(w.message) for w in seen)) == (1, 2)
    for name in ("lightning.fabric.utilities.seed", "matplotlib.font_manager", "alembic.runtime.plugins"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name


class OOMInValidation(TinySR):
    """TinySR that runs out of memory as soon as it is evaluated (validation takes whole images)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().forward(x)


def test_out_of_memory_in_validation_gets_the_validation_advice(train_cfg) -> None:
    from pspl_lightning.cli.train import train

    cfg = train_cfg("model=tiny", f"model._target_={__name__}.OOMInValidation", "model.n_feats=4",
                    "model.n_layers=1", "trainer.max_steps=2", "trainer.val_check_interval=1", tiny=False)
    with pytest.raises(OutOfMemory) as caught:
        train(cfg)
    line = str(caught.value)
    assert line.startswith("Out of memory at step 1 (validate): it tried to allocate 20.00 GiB with "), line
    assert "validate on smaller images (data.val_sets)" in line and "lower data.batch_size" not in line


def test_a_key_that_follows_another_is_reported_under_the_key_set(train_cfg) -> None:
    from pspl_lightning.cli.checks import check_train_config

    with pytest.raises(ConfigError, match=r"^schedule.max_steps=-3 is not allowed"):
        check_train_config(train_cfg("schedule.max_steps=-3", tiny=False))
    with pytest.raises(ConfigError, match=r"^trainer.max_steps=-3 is not allowed"):
        check_train_config(train_cfg("trainer.max_steps=-3", tiny=False))


def test_a_mistake_removes_only_the_folders_its_command_made(tmp_path: Path) -> None:
    """failures.make_run_folder remembers the first parent it created; a run folder holding only Hydra's
    record, the log, a logger's hparams.yaml and a W&B run that logged nothing goes, with those parents."""
    from pspl_lightning.cli import failures

    kept = tmp_path / "outputs"
    kept.mkdir()  # the user's: existed before the command
    run = kept / "train" / "runs" / "r1"
    failures.make_run_folder(run)
    assert failures._run_folder == (run, kept / "train")
    for name in (".hydra/config.yaml", "train.log", "csv/hparams.yaml", "wandb/offline-run-x/run-x.wandb"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("")
    failures._remove_this_run_folder()
    assert kept.is_dir() and not any(kept.iterdir()) and failures._run_folder is None
    logged = "wandb/offline-run-x/files/wandb-summary.json"
    for user_made in ("checkpoints/last.ckpt", "csv/metrics.csv", logged):
        other = tmp_path / "other" / user_made.replace("/", "_")
        (other / user_made).parent.mkdir(parents=True)
        (other / user_made).write_text("")
        (other / "train.log").write_text("")
        assert not failures.remove_unused_run_folder(other) and (other / user_made).is_file(), user_made
