"""Checks ``pspl-train`` runs after building the data and the network and before the trainer and its
loggers start: the data can be read as configured, and one training batch can fit in memory.

A mistake found here leaves no logger output behind (no W&B run, no CSV folder), so the run folder holds
only Hydra's record and the log, and is removed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from pspl_lightning.errors import ConfigError

_BYTES = {"64": 8, "32": 4}  # trainer.precision's leading number; every 16-bit precision stores 2 bytes


def check_data(datamodule: L.LightningDataModule, cfg: DictConfig) -> None:
    """Run the DataModule's ``prepare_data`` and ``setup("fit")`` now, where Lightning would run them in
    ``fit``: a data mistake is reported before any logger starts. Lightning's own calls then find the
    work done. Skipped where ranks are spawned (the DataModule is pickled to them: it stays light) and in
    ranks other than a node's first (Lightning prepares data once per node)."""
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if "spawn" in strategy or int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    datamodule.prepare_data()
    datamodule.setup("fit")


def check_steps_left(ckpt_path: str, max_steps: int) -> None:
    """A checkpoint given as ``ckpt_path`` that is already at ``trainer.max_steps``: Lightning would end the
    fit at once, with no validation, no checkpoint and no ``metrics.json``; say so instead."""
    try:  # mmap: the step without reading the weights
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, ValueError):
        return  # not a zip checkpoint; Lightning's own reading reports what is wrong with it
    step = int(state.get("global_step", 0)) if isinstance(state, dict) else 0
    if max_steps > 0 and step >= max_steps:
        raise ConfigError(
            f"ckpt_path={ckpt_path} is at step {step} and trainer.max_steps={max_steps}: nothing is left to "
            f"train; raise trainer.max_steps to train on from it, or score it with "
            f"pspl-eval ckpt={ckpt_path}")


def memory_limit(accelerator: str) -> tuple[int, str] | None:
    """(bytes, what) of the memory a training batch lives in: the smallest visible GPU's, else this
    machine's RAM (or its container's limit, when lower); None where it cannot be read."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            return None
        devices = range(torch.cuda.device_count())
        total = min(torch.cuda.get_device_properties(i).total_memory for i in devices)
        return total, "the GPU's memory"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    cgroup = Path("/sys/fs/cgroup/memory.max")
    limit = cgroup.read_text().strip() if cgroup.is_file() else "max"
    if limit.isdigit() and int(limit) < total:
        return int(limit), "this container's memory limit"
    return total, "this machine's memory"


def largest_activation(net: nn.Module, lr_patch: int) -> tuple[int, tuple[int, ...]] | None:
    """(elements, shape) of the largest tensor any layer of ``net`` outputs for one ``lr_patch`` LR patch
    (a forward pass in eval mode without gradients, on the network's device; no random numbers drawn);
    None when the network cannot take such a patch."""
    largest: list[tuple[int, tuple[int, ...]]] = [(0, ())]

    def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.numel() > largest[0][0]:
            largest[0] = (output.numel(), tuple(output.shape[1:]))

    param = next(net.parameters(), None)
    x = torch.zeros(1, 3, lr_patch, lr_patch, device=param.device if param is not None else "cpu")
    hooks = [m.register_forward_hook(record) for m in net.modules()]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(x)
    except Exception:  # a network that cannot take this patch (size rules, ...): no estimate, no refusal
        return None
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    return largest[0]


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_memory(cfg: DictConfig, net: nn.Module) -> None:
    """Refuse a batch that cannot fit: the batch's LR patches and the network's largest activation for them
    are in memory together in the training step; when those two alone exceed the device's whole memory,
    allocating them would fail (after the loader had made the whole batch). Raises :class:`ConfigError`
    naming the batch, the patch, the network, the precision, the bytes and what to lower."""
    data, precision = cfg.data, str(cfg.trainer.get("precision", "32-true"))
    scale, batch = int(data.scale), int(data.batch_size)
    lr_patch = int(data.patch_size) // scale
    limit = memory_limit(str(cfg.trainer.get("accelerator", "auto")))
    found = largest_activation(net, lr_patch)
    if limit is None or found is None:
        return
    elements, shape = found
    size = _BYTES.get(precision.split("-")[0], 2)
    activation = batch * elements * size
    needed = activation + batch * 3 * lr_patch * lr_patch * 4  # + the float32 LR batch it is computed from
    total, where = limit
    if needed <= total:
        return
    lower = "lower data.batch_size (or data.patch_size)"
    if size > 2:
        lower += ", or train with trainer.precision=bf16-mixed"
    per_patch = " x ".join(map(str, shape))
    raise ConfigError(
        f"data.batch_size={batch} does not fit in memory: a batch of {batch} HR patches of "
        f"{int(data.patch_size)} pixels (data.patch_size, x{scale}) through {type(net).__name__} at "
        f"trainer.precision={precision} needs more than {_gb(needed)} (its largest activation alone, "
        f"{per_patch} per patch, takes {_gb(activation)}), and {where} is {_gb(total)}: {lower}")
