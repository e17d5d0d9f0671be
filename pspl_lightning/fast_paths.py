"""Optional speed-ups of the network for GPUs: channels_last memory format and torch.compile."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def prepare_network(net: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Return ``net`` converted to channels_last and/or wrapped by ``torch.compile`` as asked."""
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        net = torch.compile(net)
    return net
