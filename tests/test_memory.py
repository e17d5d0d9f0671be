"""The PSPL loss keeps nothing alive from step to step: no graph, no growing buffers, no growing RSS."""

from __future__ import annotations

import gc

import pytest
import torch

from pspl_lightning.losses import PSPLLoss


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="utf-8") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _live_tensors() -> int:
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def _step(loss: PSPLLoss, net: torch.nn.Module, lr: torch.Tensor, hr: torch.Tensor,
          step: int) -> torch.Tensor:
    """One training step; returns the step's weight map (what the module hands to the callbacks)."""
    loss.set_step(step)
    value, weights = loss.loss_and_weights(net(lr), hr)
    value.backward()
    net.zero_grad(set_to_none=True)
    return weights


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy shared CPU, tiny ops with two threads mostly wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("mode", ["official", "normalized"])
def test_hundred_steps_do_not_grow_memory(mode: str, one_thread) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
    lr, hr = torch.rand(8, 3, 24, 24), torch.rand(8, 3, 48, 48)
    loss = PSPLLoss(ssim_mode=mode, step_unit=10)
    for step in range(10):  # warm-up: the filter buffers and allocator pools settle
        w = _step(loss, net, lr, hr, step)
    gc.collect()
    tensors, rss = _live_tensors(), _rss_mb()
    for step in range(10, 110):
        w = _step(loss, net, lr, hr, step)
    gc.collect()
    # A graph kept through the weights would hold ~10 tensors and ~1 MB per step: 100 steps show it.
    assert _live_tensors() == tensors
    assert _rss_mb() - rss < 8.0
    assert w.grad_fn is None and not w.requires_grad


def test_filter_keeps_one_set_of_buffers() -> None:
    """Changing the patch size replaces the buffers instead of accumulating one set per shape."""
    loss = PSPLLoss()
    for size in (32, 40, 48, 32, 40, 48):
        loss.weight_map(torch.rand(2, 3, size, size), torch.rand(2, 3, size, size), 0.5)
    filt = loss._filter
    assert filt is not None and len(filt._bufs) == 5
    assert filt._bufs[0].shape == (4 * 2 * 3, 48 + 10, 48 + 10)
