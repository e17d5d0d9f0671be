"""``pspl-data optimize`` and ``data=stream``: litdata chunks of HR images, trained from with exact resume
(0 and 2 loader workers), disjoint images per DDP rank, and one-line errors for bad inputs.

The images are made here: image ``i`` has a constant red channel ``10 + 25 i`` (every patch names its image)
and random green/blue texture. One optimized folder serves the whole module."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import multiprocessing
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pspl_lightning.cli.data import main as data_main
from pspl_lightning.cli.train import train
from pspl_lightning.data.io import list_images, read_image, write_png
from pspl_lightning.data.optimize import decode_item, encode_png
from pspl_lightning.data.stream import GroupedStreamSampler, StreamDataModule
from pspl_lightning.errors import ConfigError
from tests.conftest import TINY, compose_config
from tests.helpers.fault_probes import tensor_dicts_equal

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

IMAGES = 8
ROOT = Path(__file__).resolve().parents[1]


def _image(i: int) -> np.ndarray:
    img = np.random.default_rng(i).integers(0, 256, (48 + 4 * i, 64, 3), dtype=np.uint8)
    img[..., 0] = 10 + 25 * i
    return img


def _ids(hr: torch.Tensor) -> list[int]:
    """The image each HR patch (B x 3 x H x W) came from."""
    return ((hr[:, 0, 0, 0].double() - 10) / 25).round().int().tolist()


class ImageProbe(Callback):
    """Every rank appends (epoch, step, image of each patch of its batch) to ``out_dir/rank<r>.jsonl``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, "ids": _ids(batch[1])}
        with open(self.out_dir / f"rank{trainer.global_rank}.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def stream_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``pspl-data optimize`` (2 workers) of 8 images and one undecodable file; what it printed, and what
    litdata logged."""
    root = tmp_path_factory.mktemp("stream")
    for i in range(IMAGES):
        write_png(root / "HR" / f"img{i}.png", _image(i))
    (root / "HR" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    write_png(root / "val" / "img3.png", _image(3))
    out, err = io.StringIO(), io.StringIO()
    start_method = multiprocessing.get_start_method()
    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("litdata").addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            data_main(["optimize", f"input={root / 'HR'}", f"output={root / 'lit'}", "workers=2",
                       "min_size=40"])
    finally:
        logging.getLogger("litdata").removeHandler(handler)
    # litdata switches the process to spawn; optimize puts it back (loader workers stay forked, and fast)
    assert multiprocessing.get_start_method() == start_method
    return {"root": root, "lit": root / "lit", "stdout": out.getvalue(), "stderr": err.getvalue(),
            "logged": logged}


def test_optimize_writes_every_decodable_image_and_reports_the_bad_one(stream_set: dict[str, Any]) -> None:
    lit = stream_set["lit"]
    index = json.loads((lit / "index.json").read_text())
    assert sum(c["chunk_size"] for c in index["chunks"]) == IMAGES
    skip_lines = [line for line in stream_set["stderr"].splitlines() if "skipped" in line]
    broken = stream_set["root"] / "HR" / "broken.png"
    assert len(skip_lines) == 1
    assert skip_lines[0].startswith(f"pspl-data: skipped {broken}: cannot decode image")
    assert f"wrote {IMAGES} images (uint8, " in stream_set["stdout"] and "skipped 1" in stream_set["stdout"]
    sidecar = json.loads((lit / "pspl_images.json").read_text())
    assert sidecar["smallest"]["height"] == 48 and sidecar["smallest"]["file"].endswith("img0.png")
    assert [Path(row["file"]).name for row in sidecar["skipped"]] == ["broken.png"]

    import litdata

    items = {it["name"]: it["image"] for it in (litdata.StreamingDataset(str(lit))[i] for i in range(IMAGES))}
    assert sorted(items) == [f"img{i}" for i in range(IMAGES)]
    for i in range(IMAGES):
        np.testing.assert_array_equal(items[f"img{i}"], _image(i))  # decoded uint8, bit for bit


def test_png_format_round_trips_exactly() -> None:
    img = _image(5)
    assert np.array_equal(decode_item({"name": "x", "png": encode_png(img)}), img)
    assert np.array_equal(decode_item({"name": "x", "image": img}), img)


def test_png_is_smaller_than_uint8_on_the_sample_photographs(sample_root: Path) -> None:
    """DATA.md's sizes of the two formats on the 8 sample-set photographs."""
    images = [read_image(f) for split in ("train", "val") for f in list_images(sample_root / split / "HR")]
    raw, png = sum(a.nbytes for a in images), sum(len(encode_png(a)) for a in images)
    assert len(images) == 8 and f"{raw / 1e6:.1f}" == "13.2" and f"{png / 1e6:.1f}" == "5.6"
    text = " ".join((ROOT / "docs" / "DATA.md").read_text().split())
    assert f"{raw / png:.1f}" == "2.4"
    assert f"2.4x ({raw / 1e6:.1f} MB decoded, {png / 1e6:.1f} MB as PNG" in text


def test_optimize_refuses_an_existing_output(stream_set: dict[str, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in stream_set["lit"].iterdir())
    with pytest.raises(SystemExit) as exc:
        data_main(["optimize", f"input={stream_set['root'] / 'HR'}", f"output={stream_set['lit']}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exists and is not empty" in err and str(stream_set["lit"]) in err
    assert sorted(p.name for p in stream_set["lit"].iterdir()) == before


def test_datamodule_reads_under_root_with_the_cache_limit(stream_set: dict[str, Any]) -> None:
    """Relative folders are taken under ``data.root``; litdata gets ``data.max_cache_size``; images are read
    as written (cropped to a multiple of the scale: img1 is 52 x 64, 51 x 63 at x3)."""
    dm = StreamDataModule(input_dir="lit", root=str(stream_set["root"]), val_hr_dir="val", scale=3,
                          patch_size=24, max_cache_size="3GB", progress=False, cache_dir=None)
    assert dm.input_dir == str(stream_set["lit"]) and dm.val_hr_dir == str(stream_set["root"] / "val")
    dm.setup("fit")
    assert len(dm.train_pairs) == IMAGES and dm.chunk_sizes and sum(dm.chunk_sizes) == IMAGES
    index = next(i for i in range(IMAGES) if dm.train_pairs.read(i)[0] == "img1")
    np.testing.assert_array_equal(dm.train_pairs[index], _image(1)[:51, :63])
    assert dm.train_pairs._dataset.max_cache_size == "3GB"


def test_sampler_groups_chunks_and_gives_ranks_disjoint_images() -> None:
    chunks, repeat, group, batch = [3, 5, 4], 3, 2, 4
    per_rank = {r: GroupedStreamSampler(chunks, repeat, group, batch, seed=7, rank=r, world_size=2)
                for r in (0, 1)}
    for epoch in (0, 1):
        orders = {r: s.epoch_order(epoch) for r, s in per_rank.items()}
        images = {r: items.tolist() for r, (items, _) in orders.items()}
        assert set(images[0]).isdisjoint(images[1]) and set(images[0]) | set(images[1]) == set(range(12))
        for r in (0, 1):
            assert len(images[r]) == len(per_rank[r]) == 16  # 6 images x 3 patches, in whole batches of 4
            assert all(images[r].count(i) == repeat for i in set(images[r][:12]))
            for start in range(0, 16, group * repeat):  # each block of 6 patches comes from 2 images
                assert len(set(images[r][start : start + group * repeat])) <= group
        # chunks stay together: rank 0 holds whole chunks but for at most one split at its block's end
        chunk_of = [c for c, size in enumerate(chunks) for _ in range(size)]
        held = {c: sum(chunk_of[i] == c for i in set(images[0])) for c in range(len(chunks))}
        assert sum(0 < held[c] < chunks[c] for c in held) <= 1
        assert len(set(zip(*(t.tolist() for t in orders[0]), strict=True))) == 16  # (image, seed) once each
    again = GroupedStreamSampler(chunks, repeat, group, batch, seed=7, rank=0, world_size=2).epoch_order(1)
    assert all(torch.equal(a, b) for a, b in zip(again, per_rank[0].epoch_order(1), strict=True))
    assert not torch.equal(per_rank[0].epoch_order(0)[0], per_rank[0].epoch_order(1)[0])


def _inputs(stream_set: dict[str, Any]) -> list[str]:
    return [f"data.input_dir={stream_set['lit']}", f"data.val_hr_dir={stream_set['root'] / 'val'}"]


def _cfg(stream_set: dict[str, Any], out: Path, *overrides: str):
    return compose_config("train", [
        *TINY, "data=stream", *_inputs(stream_set), "data.cache_dir=null", "data.progress=false",
        "data.group_images=2", "trainer.val_check_interval=100",
        "optimizer.lr=1e-3", *overrides], out)


def _weights(cfg) -> dict[str, torch.Tensor]:
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def straight_run(stream_set: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """8 steps without interruption (epochs of 8 images x repeat 2 / batch 4 = 4 steps), 0 workers."""
    out = tmp_path_factory.mktemp("straight")
    probe = out / "probe"
    cfg = _cfg(stream_set, out, "trainer.max_steps=8", "data.num_workers=0",
               "+callbacks.probe._target_=tests.test_stream.ImageProbe", f"+callbacks.probe.out_dir={probe}")
    assert train(cfg)["global_step"] == 8
    rows = [json.loads(line) for line in (probe / "rank0.jsonl").read_text().splitlines()]
    return {"weights": _weights(cfg), "rows": rows}


def test_an_epoch_serves_every_image_repeat_times(straight_run: dict[str, Any]) -> None:
    for epoch in (0, 1):
        ids = [i for r in straight_run["rows"] if r["epoch"] == epoch for i in r["ids"]]
        assert sorted(ids) == sorted(list(range(IMAGES)) * 2)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_gives_the_weights_of_the_straight_run(stream_set: dict[str, Any],
                                                                straight_run: dict[str, Any],
                                                                tmp_path: Path, workers: int) -> None:
    """5 steps (stopped in epoch 1's middle), then resumed to 8: the straight run's weights, bit for bit."""
    common = ["trainer.max_steps=8", f"data.num_workers={workers}", "data.persistent_workers=false"]
    first = _cfg(stream_set, tmp_path / "a", *common,
                 "+callbacks.stop._target_=tests.helpers.probes.StopAt", "+callbacks.stop.step=5")
    assert train(first)["global_step"] == 5
    assert not tensor_dicts_equal(_weights(first), straight_run["weights"])
    resumed = _cfg(stream_set, tmp_path / "b", *common, f"resume={first.paths.output_dir}")
    assert train(resumed)["global_step"] == 8
    assert tensor_dicts_equal(_weights(first), straight_run["weights"])


def test_ddp_two_ranks_see_disjoint_images(stream_set: dict[str, Any], tmp_path: Path) -> None:
    """2 gloo ranks (ddp_spawn): in each epoch the ranks' images are disjoint and every image is served
    ``repeat`` times by its rank."""
    probe = tmp_path / "probe"
    cfg = _cfg(stream_set, tmp_path, "trainer=ddp_cpu", "trainer.strategy=ddp_spawn", "trainer.max_steps=4",
               "data.num_workers=0", "+callbacks.probe._target_=tests.test_stream.ImageProbe",
               f"+callbacks.probe.out_dir={probe}")
    assert train(cfg)["global_step"] == 4
    rows = {r: [json.loads(line) for line in (probe / f"rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)}
    for epoch in (0, 1):  # 4 images x repeat 2 / batch 4 = 2 steps per epoch and rank
        ids = {r: [i for row in rows[r] if row["epoch"] == epoch for i in row["ids"]] for r in (0, 1)}
        assert set(ids[0]).isdisjoint(ids[1])
        assert set(ids[0]) | set(ids[1]) == set(range(IMAGES))
        assert all(sorted(ids[r]) == sorted(list(set(ids[r])) * 2) for r in (0, 1))


@pytest.mark.slow
def test_ddp_resume_mid_epoch_gives_the_weights_of_the_straight_run(stream_set: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    """2 gloo ranks: 3 steps (in epoch 1's middle: 2 steps per epoch and rank) resumed to 6 = 6 straight."""
    ddp = ["trainer=ddp_cpu", "trainer.strategy=ddp_spawn", "trainer.max_steps=6", "data.num_workers=0"]
    straight = _cfg(stream_set, tmp_path / "a", *ddp)
    assert train(straight)["global_step"] == 6
    first = _cfg(stream_set, tmp_path / "b", *ddp, "+callbacks.stop._target_=tests.helpers.probes.StopAt",
                 "+callbacks.stop.step=3")
    assert train(first)["global_step"] == 3
    resumed = _cfg(stream_set, tmp_path / "c", *ddp, f"resume={first.paths.output_dir}")
    assert train(resumed)["global_step"] == 6
    assert tensor_dicts_equal(_weights(first), _weights(straight))


# --- mistakes: one line, exit 2 ------------------------------------------------------------------------
def _prepare(capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    with pytest.raises(SystemExit) as exc:
        data_main(["prepare", "data=stream", "data.val_sets=[val]", "data.cache_dir=null", *overrides])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_folder_without_index_is_one_line(stream_set: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    err = _prepare(capsys, f"data.input_dir={stream_set['root'] / 'HR'}",
                   f"data.val_hr_dir={stream_set['root'] / 'val'}")
    assert f"data.input_dir={stream_set['root'] / 'HR'} has no litdata index" in err
    assert "pspl-data optimize" in err


def test_images_smaller_than_the_patch_are_passed_over_with_a_count(
        stream_set: dict[str, Any], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Image i is (48 + 4i) x 64: at patch 64, images 0-3 are too small; training goes on without them (each
    index of theirs serves the next image) instead of stopping."""
    dm = StreamDataModule(input_dir=str(stream_set["lit"]), patch_size=64, progress=False, cache_dir=None,
                          val_sets=["val"], val_hr_dir=str(stream_set["root"] / "val"))
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert lines[-1].startswith("skipped 4 of 8 streamed images smaller than the HR patch of 64 pixels")
    assert sorted(line.split()[1].rsplit("/", 1)[-1] for line in lines[:-1]) == [f"img{i}" for i in range(4)]
    served = {int(dm.train_pairs[i][0, 0, 0] - 10) // 25 for i in range(IMAGES)}
    assert served == {4, 5, 6, 7}
    capsys.readouterr()
    err = _prepare(capsys, *_inputs(stream_set), "data.patch_size=128")
    assert err.startswith("all 8 streamed images are smaller than the HR patch of 128 pixels")


def test_litdata_says_nothing_of_accounts_or_cache_sizes(stream_set: dict[str, Any]) -> None:
    said = stream_set["stdout"] + stream_set["stderr"] + " ".join(stream_set["logged"])
    assert "Create an account" not in said and "max_cache_size is unset" not in said
    assert "start_method" not in said and "Workers are ready" not in said


def test_a_missing_input_dir_is_said_not_to_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _prepare(capsys, f"data.input_dir={tmp_path / 'nowhere'}", f"data.val_hr_dir={tmp_path}")
    assert f"data.input_dir={tmp_path / 'nowhere'} does not exist" in err and "litdata index" not in err


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_a_truncated_or_missing_chunk_is_one_line(stream_set: dict[str, Any], tmp_path: Path, damage: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    lit = shutil.copytree(stream_set["lit"], tmp_path / "lit")
    chunk = sorted(lit.glob("chunk-*.bin"))[0]
    size = chunk.stat().st_size
    if damage == "truncate":
        chunk.write_bytes(chunk.read_bytes()[: size // 2])
    else:
        chunk.unlink()
    err = _prepare(capsys, f"data.input_dir={lit}", f"data.val_hr_dir={stream_set['root'] / 'val'}")
    state = f"is {size // 2} bytes where index.json says {size}" if damage == "truncate" else "is missing"
    assert err == (f"data.input_dir={lit}: chunk {chunk.name} {state} (truncated or partly copied); copy the "
                   f"folder again or write it anew with pspl-data optimize")


def test_optimize_with_a_bad_chunk_size_is_one_line_at_once(stream_set: dict[str, Any], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        data_main(["optimize", f"input={stream_set['root'] / 'HR'}", f"output={tmp_path / 'out'}",
                   "chunk_bytes=lots"])
    assert exc.value.code == 2 and time.perf_counter() - start < 2
    assert capsys.readouterr().err.strip() == (
        "Invalid configuration: chunk_bytes=lots is not allowed: expected a positive size such as 64MB, "
        "256MB or 1GB (units b, kb, mb, gb, tb)")
    assert not (tmp_path / "out").exists()


def test_train_on_a_stream_without_input_dir_is_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    """It was a 25-line MissingMandatoryValue with a run folder left behind."""
    cfg = compose_config("train", [*TINY, "data=stream", "logger=csv"], tmp_path)
    with pytest.raises(ConfigError, match=r"^data.input_dir is not set: give the folder \(or s3://...\) that "
                                          r"pspl-data optimize wrote$"):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists() or list(Path(cfg.paths.output_dir).iterdir()) == []


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9", None])
def test_unreachable_s3_is_one_line_and_does_not_hang(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      endpoint: str | None) -> None:
    """A refused endpoint, and the default endpoint without a network (as here): an error within seconds."""
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    start = time.perf_counter()
    err = _prepare(capsys, "data.input_dir=s3://pspl-no-such-bucket/df2k", "data.val_hr_dir=/nowhere")
    assert time.perf_counter() - start < 30
    host = "127.0.0.1:9" if endpoint else "s3.amazonaws.com:443"
    assert f"data.input_dir=s3://pspl-no-such-bucket/df2k: cannot reach {host}" in err


def test_optimize_to_unreachable_s3_is_one_line(stream_set: dict[str, Any],
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as exc:
        data_main(["optimize", f"input={stream_set['root'] / 'HR'}", "output=s3://pspl-no-such-bucket/x"])
    assert exc.value.code == 2
    assert "output=s3://pspl-no-such-bucket/x: cannot reach 127.0.0.1:9" in capsys.readouterr().err


def test_missing_litdata_is_one_line(stream_set: dict[str, Any], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litdata", None)  # `import litdata` now raises ImportError
    err = _prepare(capsys, *_inputs(stream_set))
    assert "needs litdata, which is not installed" in err and "pip install 'pspl-lightning[stream]'" in err
    with pytest.raises(SystemExit) as exc:
        data_main(["optimize", f"input={stream_set['root'] / 'HR'}", f"output={tmp_path / 'new'}"])
    assert exc.value.code == 2 and "needs litdata" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="needs litdata"):
        StreamDataModule(input_dir=str(stream_set["lit"]))


@pytest.mark.slow
def test_bench_stream_vs_cache_reports_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``bench_data.py --stream`` (two optimize runs) ends with BENCHMARKS.md's keys."""
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "scripts" / "bench_data.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--stream", "--images", "6", "--size", "96x128", "--patch", "32", "--batch", "4",
                "--seconds", "0.2", "--repeats", "3", "--dir", str(tmp_path)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["stream_vs_cache"] > 0 and last["cache_patches_per_s"] > 0
    assert set(last["stream_patches_per_s"]) == set(last["optimize_s"]) == {"uint8", "png"}
    assert last["chunk_bytes"]["uint8"] > 6 * 96 * 128 * 3  # the decoded arrays, plus the chunk header
