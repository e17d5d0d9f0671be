"""Inference speed: onnxruntime against PyTorch eager on the same image, in the same run.

    python scripts/bench_infer.py                                  # EDSR-baseline x2, a 128x128 LR image
    python scripts/bench_infer.py --model compact --scale 4 --size 256 --threads 2
    python scripts/bench_infer.py --ckpt outputs/train/runs/<run>/checkpoints/last.ckpt

The network comes from ``--ckpt`` (any file pspl-eval reads) or, without one, from ``configs/model/<model>``
with random weights (speed does not depend on the values). It is exported to ONNX exactly as
``pspl-export output=<file>.onnx`` does (into a temporary folder), then PyTorch eager
(``torch.inference_mode``) and an onnxruntime CPU session run the same random RGB image alternately
(A B A B ... after ``--warmup`` rounds of each, so a shared machine's slow drifts hit both); the times are
medians over ``--repeats``.
``ratio`` is ``torch_eager_ms / onnxruntime_ms`` (above 1: onnxruntime is faster). The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.export.onnx import write_onnx
from pspl_lightning.inference.loading import load_network


def build_network(model: str, scale: int, overrides: list[str]) -> tuple[torch.nn.Module, dict]:
    """``configs/model/<model>.yaml`` at ``scale`` (random weights), and its resolved config."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model}", f"data.scale={scale}",
                                                      "paths.output_dir=unused", *overrides])
    torch.manual_seed(0)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    return instantiate(model_cfg).eval(), model_cfg


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="edsr_baseline", help="a configs/model/ name (without --ckpt)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--ckpt", default=None, help="a checkpoint or weights file instead of --model")
    parser.add_argument("--size", type=int, default=128, help="LR image side in pixels")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the model, e.g. model.n_feats=32")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ckpt:
        loaded = load_network(args.ckpt)
        net, name, scale, model_cfg = loaded.net, loaded.describe(), loaded.scale, loaded.model_config
    else:
        net, model_cfg = build_network(args.model, args.scale, args.overrides)
        name, scale = args.model, args.scale
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "net.onnx"
        report = write_onnx(net, name, onnx_path, model_config=model_cfg)
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    feed = {session.get_inputs()[0].name: x.numpy()}
    eager_s, ort_s = [], []
    diff = 0.0
    for i in range(args.warmup + args.repeats):
        with torch.inference_mode():
            start = time.perf_counter()
            ref = net(x)
            eager = time.perf_counter() - start
        start = time.perf_counter()
        got = session.run(None, feed)[0]
        onnx_time = time.perf_counter() - start
        if i >= args.warmup:
            eager_s.append(eager)
            ort_s.append(onnx_time)
        diff = max(diff, float((torch.from_numpy(got) - ref).abs().max()))
    eager_ms, ort_ms = 1000 * statistics.median(eager_s), 1000 * statistics.median(ort_s)
    result = {
        "model": name, "scale": scale, "lr_size": args.size, "threads": torch.get_num_threads(),
        "repeats": args.repeats, "torch_eager_ms": round(eager_ms, 6), "onnxruntime_ms": round(ort_ms, 6),
        "ratio": round(eager_ms / ort_ms, 4), "max_abs_diff": diff, "export_s": round(report.seconds, 2),
        "export_check_max_abs_diff": report.max_abs_diff, "torch": torch.__version__,
        "onnxruntime": ort.__version__, "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
