"""Optional speed-ups of the network for GPUs: channels_last memory format and torch.compile.

The other fast paths are plain config keys: ``trainer.precision=bf16-mixed`` (the PSPL weights stay
float32/float64 and the loss reduction float32 under autocast), ``trainer.benchmark`` (cudnn autotuning,
on in ``trainer=gpu``), ``data.pin_memory`` (on by default when CUDA is present; Lightning then copies
batches with ``non_blocking=True``). See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def prepare_network(net: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Return ``net`` converted to channels_last and/or wrapped by ``torch.compile`` as asked.

    ``compile`` is skipped with a warning where TorchDynamo does not run (e.g. an unsupported Python),
    so a config written for a GPU machine still trains elsewhere.
    """
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        if torch._dynamo.is_dynamo_supported():
            net = torch.compile(net)
        else:
            log.warning("fast.compile=true ignored: torch.compile is not supported on this platform")
    return net
