"""Resumable, DDP-aware sampling: the training data stream is a pure function of (seed, position).

Batch ``b`` of a run (counted over the whole run) is fixed by the seed alone: each epoch draws its own
permutation from ``(seed, epoch)``, every sample carries its own crop/flip seed, ranks take interleaved
shards of the permutation, and an iteration starts at the position the trainer has reached. A run
resumed at step ``g`` therefore sees exactly the batches an uninterrupted run sees from step ``g`` on,
with any number of dataloader workers, and no RNG or sampler state has to be stored in checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler

from pspl_lightning.errors import DataError

_SEED_STRIDE = 1_000_003  # mixes (seed, epoch) into one generator seed without collisions in practice


class ResumableRandomSampler(Sampler[tuple[int, int]]):
    """Yields ``(item index, sample seed)`` for one rank, ``num_items // world_size`` per epoch.

    The epoch is the one the trainer sets with :meth:`set_epoch`; ``position_fn`` returns how many batches
    of that epoch the trainer has already completed (0 for a fresh epoch, more when a run resumes
    mid-epoch), read when an iteration starts (through
    :class:`~pspl_lightning.loop_state.LazyStartDataLoader`: at its first batch).
    ``batches_multiple_of`` (the gradient accumulation) trims each epoch to whole optimizer steps.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 position_fn: Callable[[], int] | None = None, batches_multiple_of: int = 1) -> None:
        if num_items < world_size * batch_size:
            raise DataError(
                f"{num_items} training samples cannot fill one batch of {batch_size} on each of {world_size} "
                f"ranks; raise data.repeat or lower data.batch_size"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.position_fn = rank, world_size, position_fn
        # A whole number of optimizer steps per epoch (gradient accumulation): no partial step at epoch
        # ends, so ``global_step * accumulate`` is exactly the number of batches consumed.
        per_rank = num_items // world_size // batch_size
        self.batches_per_epoch = per_rank - per_rank % batches_multiple_of
        if self.batches_per_epoch == 0:
            raise DataError(
                f"{num_items} training samples give {per_rank} batches of {batch_size} per rank, fewer than "
                f"trainer.accumulate_grad_batches={batches_multiple_of}; raise data.repeat"
            )
        self.epoch = 0

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch (and on resume, with the restored epoch)."""
        self.epoch = epoch

    def epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's item indices and sample seeds for ``epoch``."""
        g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
        perm = torch.randperm(self.num_items, generator=g)
        seeds = torch.randint(0, 2**62, (self.num_items,), generator=g)
        take = slice(self.rank, self.world_size * len(self), self.world_size)
        return perm[take], seeds[take]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        offset = 0 if self.position_fn is None else min(int(self.position_fn()), self.batches_per_epoch)
        items, seeds = self.epoch_order(self.epoch)
        for i in range(offset * self.batch_size, len(self)):
            yield int(items[i]), int(seeds[i])


PADDING = -1  # the index a shard is padded with: a batch to run through the loop but not to score


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``range(num_items)``: disjoint shards, no duplicates.

    Every rank gets ``ceil(num_items / world_size)`` entries (Lightning's loops and the metric sync need
    the same number of batches on every rank, or a rank with fewer waits forever); the missing ones are
    :data:`PADDING`, which the dataset marks and the module does not score.
    """

    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1) -> None:
        self.num_items, self.rank, self.world_size = num_items, rank, world_size

    def __len__(self) -> int:
        return -(-self.num_items // self.world_size)

    def __iter__(self) -> Iterator[int]:
        end = len(self) * self.world_size
        return iter(i if i < self.num_items else PADDING for i in range(self.rank, end, self.world_size))
